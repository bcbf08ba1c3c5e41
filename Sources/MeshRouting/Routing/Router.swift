// A router: turns a logical name into a client and an endpoint. Delegation (dtab + namers +
// transformers) is cached per logical name and per-request dtab, in an LRU of
// `bindingCache.paths` entries, and recomputed whenever a namer reports that its answers changed
// or the dtab itself changed (the io.l5d.fs interpreter). So the routing cost of a request is a
// dictionary lookup. Clients are cached per bound name, at most `bindingCache.clients` of them;
// one unused for `bindingCache.idleTtlSecs` is closed.

import Logging
import MeshConfig
import MeshCore
import MeshDiscovery
import MeshTelemetry
import NIOConcurrencyHelpers
import NIOCore
import Synchronization

public final class Router: Sendable {
    public let config: RouterConfig
    public var label: String { config.label }
    let identifier: Identifier
    let namers: NamerSet
    package let metrics: RequestMetrics
    package let meshMetrics: MeshMetrics
    package let limitsByServer: [RequestLimits]
    let transformers: NameTransformers
    /// The dtab requests are routed with: the interpreter's file dtab (if any) then the router's.
    public let dtab: Watchable<Dtab>
    /// What the dtab file last read as, so that an unchanged broken file is reported once.
    package let dtabFileFingerprint = NIOLockedValueBox("")
    /// Bumped whenever `dtab` changes: with the namers' generation, what cached routes depend on.
    private let dtabEpoch = Epoch()
    /// Recent routes by identifier input (the Host header, for `io.l5d.header.token`), for
    /// requests without a per-request dtab whose name binds to a single client: the common case
    /// costs one dictionary lookup instead of naming, delegating and three cache lookups.
    private let fastRoutes = NIOLockedValueBox<[String: FastRoute]>([:])
    private let errorCounters: [ProxyError.Kind: MetricCounter]
    /// Entries the router's caches let go to stay within their bounds (`bindingCache`).
    private let evictions: CacheEvictionMetrics

    struct BindingKey: Hashable, Sendable {
        let local: Dtab
        let name: Path
    }

    private struct Cached: Sendable {
        let generation: UInt64
        let result: Result<NameTree<BoundName>, DelegationError>
    }

    private let bindings: NIOLockedValueBox<LRUCache<BindingKey, Cached>>
    private let services: NIOLockedValueBox<LRUCache<Path, ServiceState>>
    private let clients: NIOLockedValueBox<LRUCache<Path, BoundClient>>

    let recentRequests: RecentRequests?
    /// Handed to clients, which log ejections and revivals.
    private let logger: Logger
    /// How each client's connections to endpoints speak (HTTP/1, with TLS or not).
    private let upstreams: any UpstreamFactory
    /// Told of every attempt and every finished request (none by default).
    package let observers: [any RequestObserver]

    package init(config: RouterConfig, namers: NamerSet, metrics: MeshMetrics, upstreams: any UpstreamFactory, recentRequests: RecentRequests? = nil, observers: [any RequestObserver] = [], logger: Logger = Logger(label: "meshd")) {
        self.observers = observers
        self.logger = logger
        self.upstreams = upstreams
        self.config = config
        self.recentRequests = recentRequests
        self.namers = namers
        self.meshMetrics = metrics
        self.identifier = Identifier(kinds: config.identifiers, dstPrefix: config.dstPrefix)
        self.metrics = metrics.router(config.label)
        self.transformers = NameTransformers(config.interpreter.transformers)
        switch config.interpreter.kind {
        case .default: self.dtab = Watchable(config.dtab)
        case .fs(_, let initial): self.dtab = Watchable(initial + config.dtab)
        }
        self.limitsByServer = config.servers.map {
            RequestLimits(maxInitialLineBytes: config.maxInitialLineKB * 1024, maxHeaderBytes: config.maxHeadersKB * 1024, maxCallDepth: $0.maxCallDepth)
        }
        var counters: [ProxyError.Kind: MetricCounter] = [:]
        for kind in ProxyError.Kind.allCases {
            counters[kind] = metrics.proxyError(router: config.label, reason: kind.rawValue)
        }
        self.errorCounters = counters
        self.evictions = metrics.cacheEvictions(router: config.label)
        self.bindings = NIOLockedValueBox(LRUCache(capacity: config.bindingCache.paths))
        self.clients = NIOLockedValueBox(LRUCache(capacity: config.bindingCache.clients))
        self.services = NIOLockedValueBox(LRUCache(capacity: config.bindingCache.paths))
    }

    /// The policy, retry budget and metrics of a logical name.
    func service(for name: Path) -> ServiceState {
        services.withLockedValue { cache -> ServiceState in
            if let existing = cache.get(name) { return existing }
            let params = config.service.params(for: name)
            let state = ServiceState(params: params, metrics: meshMetrics.service(router: label, service: name.description))
            if let evicted = cache.set(name, state) {
                evictions.services.increment()
                evicted.value.markEvicted()
            }
            return state
        }
    }

    func countError(_ error: ProxyError) {
        errorCounters[error.kind]?.increment()
    }

    /// The interpreter's dtab file changed: route with `fileDtab` before the router's dtab.
    package func fileDtabChanged(_ fileDtab: Dtab) {
        dtab.set(fileDtab + config.dtab)
        dtabEpoch.bump()
    }

    /// What cached routes and bindings depend on: changes when a namer's answers or the dtab do.
    private var routingEpoch: UInt64 { namers.generation &+ dtabEpoch.value }

    /// A route taken before for `token`, if nothing it depends on has changed since.
    /// A stale one (its client closed, its service evicted) is dropped, so that it does not
    /// keep them alive; routes never asked for again go when the table is next emptied.
    func fastRoute(_ token: String) -> FastRoute? {
        guard let route = fastRoutes.withLockedValue({ $0[token] }) else { return nil }
        guard route.epoch == routingEpoch, !route.client.isClosed, !route.service.isEvicted else {
            fastRoutes.withLockedValue { routes in
                if routes[token] === route { routes[token] = nil }
            }
            return nil
        }
        return route
    }

    func remember(_ route: FastRoute, for token: String) {
        fastRoutes.withLockedValue { routes in
            if routes.count >= config.bindingCache.paths {
                evictions.fastRoutes.increment(by: Int64(routes.count))
                routes.removeAll(keepingCapacity: true)
            }
            routes[token] = route
        }
    }

    /// Builds the cacheable route for a name that bound to a single client.
    func makeFastRoute(name: Path, bound: BoundName, client: BoundClient, epoch: UInt64) -> FastRoute {
        FastRoute(name: name, bound: bound, client: client, service: service(for: name), epoch: epoch)
    }

    /// A delegator over the router's dtab followed by a per-request `local` one.
    public func delegator(local: Dtab = .empty) -> Delegator<BoundName> {
        Delegator<BoundName>(dtab: dtab.value + local) { [namers] path throws(DelegationError) in try namers.lookup(path) }
    }

    /// The bound tree for a logical name, from the cache when nothing it depends on changed.
    func bind(_ name: Path, local: Dtab) -> Result<NameTree<BoundName>, DelegationError> {
        let generation = routingEpoch
        let key = BindingKey(local: local, name: name)
        if let cached = bindings.withLockedValue({ $0.get(key) }), cached.generation == generation {
            return cached.result
        }
        let delegator = delegator(local: local)
        let result: Result<NameTree<BoundName>, DelegationError>
        do {
            var tree = try delegator.bind(name)
            if !transformers.isEmpty {
                tree = try transformers.apply(tree) { path throws(DelegationError) in try delegator.bind(path) }
            }
            result = .success(tree)
        } catch {
            result = .failure(error)
        }
        if bindings.withLockedValue({ $0.set(key, Cached(generation: generation, result: result)) }) != nil {
            evictions.bindings.increment()
        }
        return result
    }

    /// The bound tree for `name`, or the error a request for it gets when delegation fails.
    /// A request whose own dtab makes delegation run past its limits gets 400: the fault is in
    /// the request, and retrying it elsewhere would cost the same.
    private func boundTree(_ name: Path, local: Dtab) -> Result<NameTree<BoundName>, ProxyError> {
        bind(name, local: local).mapError { error in
            switch error {
            case .workBudgetExceeded where !local.isEmpty, .maxDepthExceeded where !local.isEmpty:
                return ProxyError(.delegationLimit, "cannot route \(name) with the request's dtab: \(error)")
            default:
                return ProxyError(.unroutable, "cannot route \(name): \(error)")
            }
        }
    }

    /// Routes a logical name to one bound name and its client. `epoch` is set when the result
    /// may be cached as a fast route (the name bound to a single client).
    func route(_ name: Path, local: Dtab, random: inout SplitMix64) -> Result<(bound: BoundName, client: BoundClient, epoch: UInt64?), ProxyError> {
        let epoch = routingEpoch
        switch boundTree(name, local: local) {
        case .failure(let error):
            return .failure(error)
        case .success(let tree):
            var single = false
            if case .leaf = tree { single = true }
            switch choose(tree, random: &random) {
            case .leaf(let bound):
                return .success((bound, client(for: bound), single ? epoch : nil))
            default:
                return .failure(explainFailure(name, local: local))
            }
        }
    }

    /// Why `name` would not route — what a request's `l5d-err` would say — or nil when it binds
    /// to at least one bound name (`meshd delegate`'s exit status).
    public func unroutableReason(_ name: Path, local: Dtab = .empty) -> String? {
        switch boundTree(name, local: local) {
        case .failure(let error):
            return error.message
        case .success(let tree):
            return tree.leaves.isEmpty ? explainFailure(name, local: local).message : nil
        }
    }

    /// Why `name` does not route, in one line: the steps that led nowhere and their dentries.
    func explainFailure(_ name: Path, local: Dtab) -> ProxyError {
        let tree = delegator(local: local).delegate(name)
        let explanation = DelegationExplanation.summary(tree)
        let kind: ProxyError.Kind = explanation.onlyEmpty ? .noEndpoints : .unroutable
        return ProxyError(kind, "no route for \(name): \(explanation.text)", retryable: true)
    }

    /// For a client with no usable endpoints: which name, bound how, and why.
    func explainNoEndpoints(_ name: Path, local: Dtab, client: BoundClient, reason: String) -> ProxyError {
        let via = DelegationExplanation.dentry(leading: client.id, in: delegator(local: local).delegate(name))
        let viaText = via.map { " via dentry \($0)" } ?? ""
        return ProxyError(.noEndpoints, "no endpoints for \(name): \(client.id) (bound\(viaText)) \(reason)", retryable: true)
    }

    /// Picks one branch of unions by weight, down to a leaf (or an uninhabited result).
    private func choose(_ tree: NameTree<BoundName>, random: inout SplitMix64) -> NameTree<BoundName> {
        switch tree {
        case .union(let weighted):
            // Weights can come from a request's dtab: each is finite, but their sum may not be.
            let largest = weighted.reduce(0.0) { max($0, $1.weight) }
            let scale = largest > 1 ? largest : 1
            let total = weighted.reduce(0.0) { $0 + max(0, $1.weight / scale) }
            guard total > 0, total.isFinite else {
                return choose(weighted[Int.random(in: 0..<weighted.count, using: &random)].tree, random: &random)
            }
            var target = Double.random(in: 0..<total, using: &random)
            for item in weighted {
                target -= max(0, item.weight / scale)
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
        if let existing = clients.withLockedValue({ $0.get(bound.id) }) { return existing }
        let params = config.client.params(for: bound.id)
        let created = BoundClient(bound: bound, routerLabel: label, params: params, upstream: upstreams.upstream(for: bound.id, params: params), metrics: meshMetrics, logger: logger)
        var evicted: [BoundClient] = []
        let winner = clients.withLockedValue { clients -> BoundClient in
            if let existing = clients.get(bound.id) { return existing }
            clients.insert(bound.id, created)
            // Over the limit, the least recently used clients with nothing in flight go; busy
            // ones stay until they are idle.
            evicted = clients.evictOverflow { $0 !== created && $0.inFlight == 0 }.map(\.value)
            return created
        }
        if !evicted.isEmpty { evictions.clients.increment(by: Int64(evicted.count)) }
        if winner !== created { created.close() }
        for client in evicted { client.close() }
        return winner
    }

    /// Closes clients unused for `bindingCache.idleTtlSecs` with nothing in flight.
    package func closeIdleClients(now: UInt64) {
        let ttl = UInt64(config.bindingCache.idleTtlSecs) * 1_000_000_000
        let idle = clients.withLockedValue { clients in
            clients.removeAll { _, client in now &- client.lastUsed > ttl && client.inFlight == 0 }
                + clients.evictOverflow { $0.inFlight == 0 }
        }
        for (_, client) in idle { client.close() }
    }

    /// Snapshots of every client, for the admin port.
    public func clientSnapshots() -> [ClientSnapshot] {
        clients.withLockedValue { $0.values }.map { $0.snapshot() }.sorted { $0.id < $1.id }
    }

    /// Closes every client (shutdown or reload).
    package func close() {
        let all = clients.withLockedValue { clients -> [BoundClient] in
            clients.removeAll { _, _ in true }.map(\.value)
        }
        for client in all { client.close() }
    }
}

/// A route remembered for the fast path, with the header values it adds to each request
/// already written out.
final class FastRoute: Sendable {
    let name: Path
    let bound: BoundName
    let client: BoundClient
    let service: ServiceState
    let epoch: UInt64
    let serviceText: String
    let clientText: String
    let residualText: String?

    init(name: Path, bound: BoundName, client: BoundClient, service: ServiceState, epoch: UInt64) {
        self.name = name
        self.bound = bound
        self.client = client
        self.service = service
        self.epoch = epoch
        self.serviceText = name.description
        self.clientText = bound.id.description
        self.residualText = bound.residual.isEmpty ? nil : bound.residual.description
    }
}
