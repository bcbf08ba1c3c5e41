// Power of two choices, least loaded (Finagle's `P2CLeastLoaded`, Linkerd's default balancer).
//
// Picks two endpoints at random, in proportion to their weights, and sends to the one with fewer
// outstanding requests per unit of weight. Two random choices spread load almost as well as
// examining every endpoint, at a constant cost, and without the herd behaviour of "always the
// least loaded". An endpoint that is not available (ejected by failure accrual) is skipped for up
// to `maxEffort` re-picks; after that the pick stands, so that a client whose endpoints are all
// ejected still tries the least-bad one instead of failing outright.

/// Least-loaded-of-two balancer state over a set of endpoints. Pure: randomness is passed in.
public struct P2CBalancer: Sendable {
    public struct Node: Sendable {
        public var endpoint: Endpoint
        /// Requests picked for this node and not yet finished.
        public var load: Int = 0
        /// False while failure accrual has the node ejected.
        public var isAvailable: Bool = true
    }

    /// How many times to re-pick when a pick lands on unavailable nodes (Linkerd: `maxEffort`).
    public let maxEffort: Int
    public private(set) var nodes: [Node] = []
    private var indexByAddress: [Endpoint.Address: Int] = [:]
    /// Running sums of weights, for weighted sampling; `cumulative.last` is the total.
    private var cumulative: [Double] = []

    public init(maxEffort: Int = 5) {
        precondition(maxEffort >= 1, "maxEffort must be at least 1")
        self.maxEffort = maxEffort
    }

    /// Replaces the endpoint set. Nodes whose address is unchanged keep their load and
    /// availability; their weight follows the update.
    public mutating func update(endpoints: [Endpoint]) {
        var next: [Node] = []
        next.reserveCapacity(endpoints.count)
        var seen: [Endpoint.Address: Int] = [:]
        for endpoint in endpoints where seen[endpoint.address] == nil {
            var node = Node(endpoint: endpoint)
            if let old = indexByAddress[endpoint.address] {
                node.load = nodes[old].load
                node.isAvailable = nodes[old].isAvailable
            }
            seen[endpoint.address] = next.count
            next.append(node)
        }
        nodes = next
        indexByAddress = seen
        rebuildWeights()
    }

    public var isEmpty: Bool { nodes.isEmpty }

    /// Chooses an endpoint for one request and counts the request against it.
    /// Returns nil only when there are no endpoints.
    public mutating func pick<R: RandomNumberGenerator>(using random: inout R) -> Endpoint? {
        guard let index = choose(using: &random) else { return nil }
        nodes[index].load += 1
        return nodes[index].endpoint
    }

    /// A request picked earlier has finished. Unknown addresses (removed since) are ignored.
    public mutating func requestFinished(_ address: Endpoint.Address) {
        guard let index = indexByAddress[address] else { return }
        nodes[index].load = max(0, nodes[index].load - 1)
    }

    public mutating func setAvailable(_ address: Endpoint.Address, _ available: Bool) {
        guard let index = indexByAddress[address] else { return }
        nodes[index].isAvailable = available
    }

    public func node(for address: Endpoint.Address) -> Node? {
        indexByAddress[address].map { nodes[$0] }
    }

    private func choose<R: RandomNumberGenerator>(using random: inout R) -> Int? {
        switch nodes.count {
        case 0: return nil
        case 1: return 0
        default: break
        }
        var best = 0
        for _ in 0..<maxEffort {
            let a = sample(using: &random)
            var b = sample(using: &random)
            if a == b { b = (a + 1 + Int.random(in: 0..<(nodes.count - 1), using: &random)) % nodes.count }
            // Ties go to the first sample, itself drawn in proportion to weight: when nothing is
            // outstanding, traffic follows the weights; under load, load per weight evens out.
            best = score(b) < score(a) ? b : a
            if nodes[best].isAvailable { return best }
            let other = best == a ? b : a
            if nodes[other].isAvailable { return other }
        }
        return best
    }

    /// Outstanding requests per unit of weight; lower is better.
    private func score(_ index: Int) -> Double {
        let weight = nodes[index].endpoint.weight
        return weight > 0 ? Double(nodes[index].load) / weight : .infinity
    }

    private func sample<R: RandomNumberGenerator>(using random: inout R) -> Int {
        guard let total = cumulative.last, total > 0 else {
            return Int.random(in: 0..<nodes.count, using: &random)
        }
        let target = Double.random(in: 0..<total, using: &random)
        // Binary search for the first running sum above the target.
        var low = 0
        var high = cumulative.count - 1
        while low < high {
            let mid = (low + high) / 2
            if cumulative[mid] > target { high = mid } else { low = mid + 1 }
        }
        return low
    }

    private mutating func rebuildWeights() {
        cumulative.removeAll(keepingCapacity: true)
        var sum = 0.0
        for node in nodes {
            sum += max(0, node.endpoint.weight)
            cumulative.append(sum)
        }
    }
}
