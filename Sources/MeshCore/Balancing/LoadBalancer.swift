// A client's load balancer over its live endpoint set: the algorithm (`BalancerKind`), the
// per-endpoint load and latency estimates, and failure accrual, as one pure value. The client
// keeps it under a short lock: `pick` when a request starts, `finished` when it ends, `update`
// when discovery answers. Endpoints that stay across an update keep their load, latency estimate
// and accrual state; new ones start fresh; removed ones are forgotten (their in-flight requests'
// `finished` calls are ignored).
//
// Weights work as in Finagle's weight classes: endpoints of equal weight form a class, a class is
// chosen with probability proportional to its total weight, and the algorithm balances within
// it. So every algorithm honours weights, and within a class it behaves as it would unweighted.
//
// An endpoint that failure accrual has ejected is skipped. When every endpoint is ejected, the
// pick still goes somewhere — unless `failFast` is set, in which case there is no pick: to the
// endpoint whose ejection ends soonest (the likeliest to be back), and the first such pick is that
// endpoint's probe, so that one which has recovered rejoins at once. (Load-balancing among all of
// them instead sent half the traffic of a two-endpoint client to the one that had just died
// while the other, back for seconds, sat out its backoff; the requeues that followed emptied the
// requeue budget.)

public struct LoadBalancer: Sendable {
    public struct Node: Sendable {
        public var endpoint: Endpoint
        /// Requests picked here and not yet finished.
        public var load = 0
        public var accrual: EndpointAccrual
        /// Peak-EWMA latency estimate (ns) and when it was last updated.
        public var cost = 0.0
        var costStamp: UInt64 = 0
        /// Smooth weighted round robin's running weight.
        var current = 0.0
    }

    /// Whether the last `pick` was the probe of an ejected endpoint; pass it back to `finished`.
    public private(set) var lastPickWasProbe = false

    public enum Pick: Sendable, Equatable {
        case endpoint(Endpoint)
        /// No endpoints at all.
        case none
        /// Every endpoint is ejected and `failFast` forbids sending anyway.
        case allEjected
    }

    public let kind: BalancerKind
    public let policy: FailureAccrualPolicy
    public let backoff: Backoff
    public let failFast: Bool
    public private(set) var nodes: [Node] = []
    private var indexByAddress: [Endpoint.Address: Int] = [:]
    /// Endpoints grouped by weight: (weight, member indices); one class when all weights match.
    private var classes: [(weight: Double, members: [Int])] = []
    // Aperture state: a stable random order of the nodes, the window size, the smoothed load.
    private var order: [Int] = []
    private var aperture = 1
    private var smoothedLoad = 0.0
    private var smoothedStamp: UInt64 = 0
    private var totalLoad = 0

    public init(kind: BalancerKind = .p2c(maxEffort: 5), policy: FailureAccrualPolicy = .consecutiveFailures(5),
                backoff: Backoff = .linkerdFailureAccrualDefault, failFast: Bool = false) {
        self.kind = kind
        self.policy = policy
        self.backoff = backoff
        self.failFast = failFast
        if case .aperture(_, _, _, _, let minimum) = kind { aperture = max(1, minimum) }
    }

    public var isEmpty: Bool { nodes.isEmpty }

    public func node(for address: Endpoint.Address) -> Node? {
        indexByAddress[address].map { nodes[$0] }
    }

    /// How many endpoints are known, and how many are available at `now`.
    public func counts(now: UInt64) -> (known: Int, available: Int) {
        (nodes.count, nodes.reduce(0) { $0 + ($1.accrual.isAvailable(now: now) ? 1 : 0) })
    }

    // MARK: discovery

    public mutating func update<R: RandomNumberGenerator>(endpoints: [Endpoint], using random: inout R) {
        var next: [Node] = []
        var seen: [Endpoint.Address: Int] = [:]
        for endpoint in endpoints where seen[endpoint.address] == nil {
            var node = Node(endpoint: endpoint, accrual: EndpointAccrual(policy: policy, backoff: backoff))
            if let old = indexByAddress[endpoint.address] {
                node = nodes[old]
                node.endpoint = endpoint
            }
            seen[endpoint.address] = next.count
            next.append(node)
        }
        // Aperture keeps the surviving nodes' relative order and shuffles new ones in at random.
        let previousOrder = order.compactMap { index -> Endpoint.Address? in index < nodes.count ? nodes[index].endpoint.address : nil }
        nodes = next
        indexByAddress = seen
        totalLoad = nodes.reduce(0) { $0 + $1.load }
        var newOrder = previousOrder.compactMap { seen[$0] }
        for index in nodes.indices where !newOrder.contains(index) {
            newOrder.insert(index, at: Int.random(in: 0...newOrder.count, using: &random))
        }
        order = newOrder
        if case .aperture(_, _, _, _, let minimum) = kind {
            aperture = min(max(aperture, max(1, minimum)), max(nodes.count, 1))
        }
        var byWeight: [Double: [Int]] = [:]
        for (index, node) in nodes.enumerated() { byWeight[max(0, node.endpoint.weight), default: []].append(index) }
        classes = byWeight.keys.sorted(by: >).map { ($0, byWeight[$0]!) }
    }

    // MARK: requests

    /// Chooses an endpoint for one request at `now` and counts the request against it.
    /// `avoiding`: endpoints this request has tried already (a retry or requeue). While any other
    /// is left, the pick is one of those — an available one, the least loaded, or else the one
    /// back soonest, as its probe — so that a retry never lands on the endpoint that just failed
    /// it while another might answer.
    public mutating func pick<R: RandomNumberGenerator>(now: UInt64, avoiding: Set<Endpoint.Address> = [], using random: inout R) -> Pick {
        guard !nodes.isEmpty else { return .none }
        var anyAvailable = nodes.contains { $0.accrual.isAvailable(now: now) }
        var untried: [Int] = []
        if !avoiding.isEmpty {
            untried = nodes.indices.filter { !avoiding.contains(nodes[$0].endpoint.address) }
            if !untried.isEmpty { anyAvailable = untried.contains { nodes[$0].accrual.isAvailable(now: now) } }
        }
        if !anyAvailable && failFast && !nodes.contains(where: { $0.accrual.isAvailable(now: now) }) { return .allEjected }
        let candidates = untried.isEmpty ? weightClass(now: now, anyAvailable: anyAvailable, using: &random) : untried
        anyAvailable = anyAvailable && candidates.contains { nodes[$0].accrual.isAvailable(now: now) }
        let index: Int
        switch kind {
        case _ where !untried.isEmpty && anyAvailable:
            index = leastLoaded(among: candidates, now: now, anyAvailable: true, using: &random)
        case _ where !anyAvailable:
            index = soonestBack(among: candidates, now: now, using: &random)
        case .p2c, .ewma:
            index = twoChoices(among: candidates, now: now, anyAvailable: anyAvailable, using: &random)
        case .aperture:
            adjustAperture(now: now)
            index = twoChoices(among: apertureWindow(within: candidates, now: now), now: now, anyAvailable: anyAvailable, using: &random)
        case .heap:
            index = leastLoaded(among: candidates, now: now, anyAvailable: anyAvailable, using: &random)
        case .roundRobin:
            index = roundRobin(among: candidates, now: now, anyAvailable: anyAvailable)
        }
        nodes[index].load += 1
        totalLoad += 1
        lastPickWasProbe = !(nodes[index].accrual.status == .alive) && nodes[index].accrual.isAvailable(now: now)
        if !anyAvailable, case .ejected = nodes[index].accrual.status { lastPickWasProbe = true }
        nodes[index].accrual.picked(now: now, early: !anyAvailable)
        return .endpoint(nodes[index].endpoint)
    }

    /// A request picked earlier ended after `latency` ns. `success` is nil when the outcome says
    /// nothing about the endpoint (the client went away, a local limit). Returns what failure
    /// accrual did.
    @discardableResult
    public mutating func finished<R: RandomNumberGenerator>(
        _ address: Endpoint.Address, success: Bool?, wasProbe: Bool = false, latency: UInt64, now: UInt64, using random: inout R
    ) -> EndpointAccrual.Event? {
        guard let index = indexByAddress[address] else { return nil }
        if nodes[index].load > 0 {
            nodes[index].load -= 1
            totalLoad -= 1
        }
        if case .aperture = kind { adjustAperture(now: now) }
        guard let success else {
            if wasProbe { nodes[index].accrual.probeAbandoned(now: now) }
            return nil
        }
        // A failure is as bad as a very slow answer, whatever its own latency: a refused
        // connection is quick, and must not make its endpoint look fast.
        observeLatency(index, latency: success ? latency : max(latency, Self.failureLatency), now: now)
        return nodes[index].accrual.outcome(success: success, wasProbe: wasProbe, now: now, using: &random)
    }

    /// The latency a failed request counts as, for `ewma`: one second.
    static let failureLatency: UInt64 = 1_000_000_000

    /// The decayed peak-EWMA latency estimate of a node at `now`, in ns.
    public func latencyEstimate(_ address: Endpoint.Address, now: UInt64) -> Double? {
        guard let index = indexByAddress[address] else { return nil }
        return decayedCost(index, now: now)
    }

    // MARK: algorithms

    /// The members of one weight class, chosen in proportion to the class's total weight among
    /// the classes with an available endpoint (all classes when none has one).
    private func weightClass<R: RandomNumberGenerator>(now: UInt64, anyAvailable: Bool, using random: inout R) -> [Int] {
        guard classes.count > 1 else { return classes.first?.members ?? [] }
        // A class's share is its weight times its members that can take traffic now.
        let shares = classes.map { weightClass -> Double in
            let usable = anyAvailable ? weightClass.members.filter { nodes[$0].accrual.isAvailable(now: now) }.count : weightClass.members.count
            return weightClass.weight * Double(usable)
        }
        let total = shares.reduce(0, +)
        guard total > 0, total.isFinite else { return classes.flatMap(\.members) }
        var target = Double.random(in: 0..<total, using: &random)
        for (index, weightClass) in classes.enumerated() {
            target -= shares[index]
            if target < 0 { return weightClass.members }
        }
        return classes[classes.count - 1].members
    }

    /// Outstanding requests per unit of weight, or for `ewma` latency × (load + 1).
    private func score(_ index: Int, now: UInt64) -> Double {
        let node = nodes[index]
        let weight = node.endpoint.weight
        guard weight > 0 else { return .infinity }
        if case .ewma = kind {
            let cost = decayedCost(index, now: now)
            // An endpoint with requests out but no latency measured yet is treated as slow, so a
            // burst does not all land on a newcomer.
            if cost == 0 { return node.load > 0 ? 1e15 + Double(node.load) : 0 }
            // Weight acts through sampling (and ties), as Finagle's weight classes do: dividing the
            // cost by it would send everything to the heaviest endpoint at equal latencies.
            return cost * Double(node.load + 1)
        }
        return Double(node.load) / weight
    }

    private func decayedCost(_ index: Int, now: UInt64) -> Double {
        guard case .ewma(_, let tau) = kind, tau > 0 else { return nodes[index].cost }
        let elapsed = now > nodes[index].costStamp ? Double(now - nodes[index].costStamp) : 0
        return nodes[index].cost * decay(elapsed / Double(tau))
    }

    /// Peak EWMA: a worse latency replaces the estimate at once; a better one pulls it down by
    /// a weight that grows with the time since the last observation.
    private mutating func observeLatency(_ index: Int, latency: UInt64, now: UInt64) {
        guard case .ewma(_, let tau) = kind, tau > 0 else { return }
        let rtt = Double(latency)
        let elapsed = now > nodes[index].costStamp ? Double(now - nodes[index].costStamp) : 0
        let w = decay(elapsed / Double(tau))
        let current = nodes[index].cost * w
        nodes[index].cost = rtt > current ? rtt : nodes[index].cost * w + rtt * (1 - w)
        nodes[index].costStamp = now
    }

    /// Two weighted random picks from `candidates`, the better one, re-picked up to `maxEffort`
    /// times when both are unavailable; then any available one; then the least bad.
    private func twoChoices<R: RandomNumberGenerator>(among candidates: [Int], now: UInt64, anyAvailable: Bool, using random: inout R) -> Int {
        guard candidates.count > 1 else {
            if let only = candidates.first, !anyAvailable || nodes[only].accrual.isAvailable(now: now) { return only }
            return leastLoaded(among: Array(nodes.indices), now: now, anyAvailable: anyAvailable, using: &random)
        }
        var best = candidates[0]
        for _ in 0..<kind.maxEffort {
            let a = candidates[Int.random(in: 0..<candidates.count, using: &random)]
            var b = candidates[Int.random(in: 0..<(candidates.count - 1), using: &random)]
            if b == a { b = candidates[candidates.count - 1] }
            best = score(b, now: now) < score(a, now: now) ? b : a
            if nodes[best].accrual.isAvailable(now: now) { return best }
            let other = best == a ? b : a
            if nodes[other].accrual.isAvailable(now: now) { return other }
        }
        if anyAvailable { return leastLoaded(among: candidates, now: now, anyAvailable: true, using: &random) }
        return candidates.min { score($0, now: now) < score($1, now: now) } ?? best
    }

    /// With every node ejected: the one whose ejection ends soonest among those not already being
    /// probed (all of them when every one is), ties to the least loaded.
    private func soonestBack<R: RandomNumberGenerator>(among candidates: [Int], now: UInt64, using random: inout R) -> Int {
        var best: Int?
        var bestUntil = UInt64.max
        for index in candidates {
            guard case .ejected(let until) = nodes[index].accrual.status else { continue }
            if until < bestUntil || (until == bestUntil && best.map { score(index, now: now) < score($0, now: now) } == true) {
                best = index
                bestUntil = until
            }
        }
        return best ?? leastLoaded(among: candidates, now: now, anyAvailable: false, using: &random)
    }

    /// The available node with the lowest load per weight (the least bad of all when none is
    /// available); ties broken at random.
    private func leastLoaded<R: RandomNumberGenerator>(among candidates: [Int], now: UInt64, anyAvailable: Bool, using random: inout R) -> Int {
        var best: [Int] = []
        var bestScore = Double.infinity
        for index in candidates where !anyAvailable || nodes[index].accrual.isAvailable(now: now) {
            let value = score(index, now: now)
            if value < bestScore {
                bestScore = value
                best = [index]
            } else if value == bestScore {
                best.append(index)
            }
        }
        guard !best.isEmpty else { return candidates.first ?? 0 }
        return best[Int.random(in: 0..<best.count, using: &random)]
    }

    /// Smooth weighted round robin over the available nodes.
    private mutating func roundRobin(among candidates: [Int], now: UInt64, anyAvailable: Bool) -> Int {
        var total = 0.0
        var chosen = -1
        for index in candidates where !anyAvailable || nodes[index].accrual.isAvailable(now: now) {
            let weight = max(0, nodes[index].endpoint.weight)
            nodes[index].current += weight
            total += weight
            if chosen < 0 || nodes[index].current > nodes[chosen].current { chosen = index }
        }
        guard chosen >= 0 else { return candidates.first ?? 0 }
        nodes[chosen].current -= total
        return chosen
    }

    /// The first `aperture` available nodes in the stable order (all nodes when none is available).
    private func apertureWindow(within candidates: [Int], now: UInt64) -> [Int] {
        let allowed = Set(candidates)
        var window: [Int] = []
        for index in order where allowed.contains(index) && nodes[index].accrual.isAvailable(now: now) {
            window.append(index)
            if window.count == aperture { break }
        }
        return window.isEmpty ? Array(order.filter(allowed.contains).prefix(aperture)) : window
    }

    /// Widens the window when load per node in it is above `highLoad`, narrows it below `lowLoad`.
    private mutating func adjustAperture(now: UInt64) {
        guard case .aperture(_, let window, let low, let high, let minimum) = kind else { return }
        let elapsed = now > smoothedStamp ? Double(now - smoothedStamp) : 0
        let w = window > 0 ? decay(elapsed / Double(window)) : 0
        smoothedLoad = smoothedLoad * w + Double(totalLoad) * (1 - w)
        smoothedStamp = now
        let perNode = smoothedLoad / Double(max(aperture, 1))
        if perNode > high && aperture < nodes.count {
            aperture += 1
        } else if perNode < low && aperture > max(1, minimum) {
            aperture -= 1
        }
    }

    /// The current aperture size (for tests and the admin port).
    public var apertureSize: Int { aperture }
}
