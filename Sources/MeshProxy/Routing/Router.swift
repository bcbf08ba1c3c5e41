// A router: turns a logical name into a client and an endpoint. Delegation (dtab + namers) is
// cached per logical name and dropped whenever a namer reports that its answers changed, so the
// routing cost of a request is a dictionary lookup; clients are cached per bound name.

import MeshConfig
import MeshCore
import MeshDiscovery
import MeshTelemetry
import NIOConcurrencyHelpers
import NIOCore

public final class Router: Sendable {
    public let config: RouterConfig
    public var label: String { config.label }
    let identifier: Identifier
    let namers: NamerSet
    let metrics: RequestMetrics
    let meshMetrics: MeshMetrics
    let limitsByServer: [RequestLimits]
    private let errorCounters: [ProxyError.Kind: MetricCounter]

    private struct Cached {
        let generation: UInt64
        let result: Result<NameTree<BoundName>, DelegationError>
    }

    private let bindings = NIOLockedValueBox<[Path: Cached]>([:])
    private let clients = NIOLockedValueBox<[Path: BoundClient]>([:])

    init(config: RouterConfig, namers: NamerSet, metrics: MeshMetrics) {
        self.config = config
        self.namers = namers
        self.meshMetrics = metrics
        self.identifier = Identifier(kinds: config.identifiers, dstPrefix: config.dstPrefix)
        self.metrics = metrics.router(config.label)
        self.limitsByServer = config.servers.map {
            RequestLimits(maxInitialLineBytes: config.maxInitialLineKB * 1024, maxHeaderBytes: config.maxHeadersKB * 1024, maxCallDepth: $0.maxCallDepth)
        }
        var counters: [ProxyError.Kind: MetricCounter] = [:]
        for kind in [ProxyError.Kind.badRequest, .unidentified, .uriTooLong, .headersTooLarge, .unroutable, .noEndpoints, .poolExhausted,
                     .tooManyRequests, .connectFailed, .upstreamFailed, .loopDetected, .bindingTimeout, .shuttingDown, .unsupportedMethod] {
            counters[kind] = metrics.proxyError(router: config.label, reason: kind.rawValue)
        }
        self.errorCounters = counters
    }

    func countError(_ error: ProxyError) {
        errorCounters[error.kind]?.increment()
    }

    /// The bound tree for a logical name, from the cache when the namers have not changed.
    func bind(_ name: Path) -> Result<NameTree<BoundName>, DelegationError> {
        let generation = namers.generation
        if let cached = bindings.withLockedValue({ $0[name] }), cached.generation == generation {
            return cached.result
        }
        let delegator = Delegator<BoundName>(dtab: config.dtab) { [namers] path throws(DelegationError) in try namers.lookup(path) }
        let result: Result<NameTree<BoundName>, DelegationError>
        do {
            result = .success(try delegator.bind(name))
        } catch {
            result = .failure(error)
        }
        bindings.withLockedValue { cache in
            if cache.count >= config.bindingCache.paths { cache.removeAll(keepingCapacity: true) }
            cache[name] = Cached(generation: generation, result: result)
        }
        return result
    }

    /// Routes a logical name to one bound name and its client.
    func route(_ name: Path, random: inout SplitMix64) -> Result<(BoundName, BoundClient), ProxyError> {
        switch bind(name) {
        case .failure(let error):
            return .failure(ProxyError(.unroutable, "cannot route \(name): \(error)"))
        case .success(let tree):
            switch choose(tree, random: &random) {
            case .leaf(let bound):
                return .success((bound, client(for: bound)))
            case .neg:
                return .failure(ProxyError(.unroutable, "no route for \(name): no dentry or namer binds it (dtab: \(config.dtab.isEmpty ? "empty" : config.dtab.description))", retryable: true))
            case .fail:
                return .failure(ProxyError(.unroutable, "routing for \(name) failed: the dtab marks it as failed (!)", retryable: true))
            default:
                return .failure(ProxyError(.noEndpoints, "\(name) resolves to an empty set of endpoints ($)", retryable: true))
            }
        }
    }

    /// Picks one branch of unions by weight, down to a leaf (or an uninhabited result).
    private func choose(_ tree: NameTree<BoundName>, random: inout SplitMix64) -> NameTree<BoundName> {
        switch tree {
        case .union(let weighted):
            let total = weighted.reduce(0.0) { $0 + max(0, $1.weight) }
            guard total > 0 else {
                return choose(weighted[Int.random(in: 0..<weighted.count, using: &random)].tree, random: &random)
            }
            var target = Double.random(in: 0..<total, using: &random)
            for item in weighted {
                target -= max(0, item.weight)
                if target < 0 { return choose(item.tree, random: &random) }
            }
            return choose(weighted[weighted.count - 1].tree, random: &random)
        case .alt(let branches):
            // Bound trees have no alternations left; be safe anyway and take the first.
            return branches.first.map { choose($0, random: &random) } ?? .neg
        default:
            return tree
        }
    }

    /// The client for a bound name, created on first use.
    func client(for bound: BoundName) -> BoundClient {
        if let existing = clients.withLockedValue({ $0[bound.id] }) { return existing }
        let created = BoundClient(bound: bound, routerLabel: label, client: config.client, metrics: meshMetrics)
        let winner = clients.withLockedValue { clients -> BoundClient in
            if let existing = clients[bound.id] { return existing }
            clients[bound.id] = created
            return created
        }
        if winner !== created { created.close() }
        return winner
    }

    /// Snapshots of every client, for the admin port.
    public func clientSnapshots() -> [ClientSnapshot] {
        clients.withLockedValue { Array($0.values) }.map { $0.snapshot() }.sorted { $0.id < $1.id }
    }

    /// Closes every client (shutdown or reload).
    func close() {
        let all = clients.withLockedValue { clients -> [BoundClient] in
            defer { clients = [:] }
            return Array(clients.values)
        }
        for client in all { client.close() }
    }
}
