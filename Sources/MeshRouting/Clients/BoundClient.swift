// One client per bound name (e.g. `/#/io.l5d.fs/users`), shared by every request that binds to
// it: the live endpoint set from discovery, the load balancer over it, and a connection pool per
// endpoint. Discovery updates keep the balancer state of endpoints that stay; endpoints that go
// drain (in-flight requests finish, idle connections close) and new ones take load at once.

import Logging
import MeshConfig
import MeshCore
import MeshDiscovery
import MeshTelemetry
import NIOConcurrencyHelpers
import NIOCore
import Synchronization

package final class BoundClient: Sendable {
    let id: Path
    let routerLabel: String
    let metrics: RequestMetrics
    let params: ClientParams
    private let meshMetrics: MeshMetrics
    private let endpointMetrics: ClientEndpointMetrics

    private struct State {
        var addr: Addr = .pending
        var balancer: LoadBalancer
        var random: SplitMix64
        var pools: [Endpoint.Address: Entry] = [:]
        var readyPromises: [EventLoopPromise<Void>] = []
        var closed = false
    }

    /// An endpoint's pool and metrics; a class, so that passing it around is one reference.
    package final class Entry: Sendable {
        let pool: EndpointPool
        let metrics: RequestMetrics
        let health: EndpointHealthMetrics

        init(pool: EndpointPool, metrics: RequestMetrics, health: EndpointHealthMetrics) {
            self.pool = pool
            self.metrics = metrics
            self.health = health
        }
    }

    /// Set once the client is closed (evicted, or its router shut down).
    private let closedFlag = Atomic<Bool>(false)
    var isClosed: Bool { closedFlag.load(ordering: .relaxed) }

    private let state: NIOLockedValueBox<State>
    /// The endpoint set this client follows; held here so that it lives as long as the client
    /// (derived and `/$/inet` sets are otherwise held only by the binding caches).
    private let addr: Watchable<Addr>
    private let observation = NIOLockedValueBox<Observation?>(nil)
    /// Uptime (ns) of the last request routed here, for idle eviction.
    private let lastUse = Atomic<UInt64>(0)
    /// Requests picked and not yet finished.
    private let outstanding = Atomic<Int>(0)
    /// Connection failures before a request was sent may move it to another endpoint, within this.
    private let requeueBudget: NIOLockedValueBox<RetryBudget>

    /// Ejections and revivals are logged: they are the moments an operator asks about.
    private let logger: Logger

    /// How connections to its endpoints speak.
    private let upstream: any UpstreamProtocol

    init(bound: BoundName, routerLabel: String, params: ClientParams, upstream: any UpstreamProtocol, metrics: MeshMetrics, logger: Logger = Logger(label: "meshd")) {
        self.logger = logger
        self.upstream = upstream
        self.id = bound.id
        self.routerLabel = routerLabel
        self.params = params
        self.meshMetrics = metrics
        self.metrics = metrics.client(router: routerLabel, client: bound.id.description)
        self.endpointMetrics = metrics.clientEndpoints(router: routerLabel, client: bound.id.description)
        var seed = SystemRandomNumberGenerator()
        let balancer = LoadBalancer(
            kind: params.loadBalancer, policy: params.failureAccrual.policy,
            backoff: Backoff(params.failureAccrual.backoff), failFast: params.failFast
        )
        self.state = NIOLockedValueBox(State(balancer: balancer, random: SplitMix64(seed: seed.next())))
        let requeue = params.requeueBudget
        self.requeueBudget = NIOLockedValueBox(RetryBudget(
            ttlSeconds: requeue.ttlSecs, minRetriesPerSecond: requeue.minRetriesPerSec, percentCanRetry: requeue.percentCanRetry
        ))
        self.addr = bound.addr
        let observation = bound.addr.observe { [weak self] addr in self?.update(addr) }
        self.observation.withLockedValue { $0 = observation }
    }

    /// Discovery published a new answer.
    private func update(_ addr: Addr) {
        var drained: [Entry] = []
        var ready: [EventLoopPromise<Void>] = []
        let now = NIODeadline.now().uptimeNanoseconds
        var available = 0
        state.withLockedValue { state in
            guard !state.closed else { return }
            // A failed lookup keeps the last good endpoints.
            if case .failed = addr, case .bound = state.addr { return }
            state.addr = addr
            let endpoints = addr.endpoints
            state.balancer.update(endpoints: endpoints, using: &state.random)
            available = state.balancer.counts(now: now).available
            let keep = Set(endpoints.map(\.address))
            for (address, entry) in state.pools where !keep.contains(address) {
                drained.append(entry)
                state.pools[address] = nil
            }
            if case .pending = addr {} else {
                ready = state.readyPromises
                state.readyPromises = []
            }
        }
        endpointMetrics.endpoints.set(Int64(addr.endpoints.count))
        endpointMetrics.available.set(Int64(available))
        // Their series go when the last exchange using them lets go (MeshMetrics.swift).
        for entry in drained { entry.pool.drain() }
        for promise in ready { promise.succeed() }
    }

    /// Completes once discovery has answered (at once if it already has).
    func whenResolved(on loop: any EventLoop) -> EventLoopFuture<Void> {
        let promise = loop.makePromise(of: Void.self)
        let resolved = state.withLockedValue { state -> Bool in
            if case .pending = state.addr {
                state.readyPromises.append(promise)
                return false
            }
            return true
        }
        if resolved { promise.succeed() }
        return promise.futureResult
    }

    var isPending: Bool {
        state.withLockedValue { if case .pending = $0.addr { return true } else { return false } }
    }

    /// Marks the client used at `now` (uptime nanoseconds); the request earns its share of requeues.
    func touch(now: UInt64) {
        lastUse.store(now, ordering: .relaxed)
        requeueBudget.withLockedValue { $0.deposit(now: now) }
    }

    /// Takes a requeue from the budget.
    func tryRequeue(now: UInt64) -> Bool {
        requeueBudget.withLockedValue { $0.tryWithdraw(now: now) }
    }

    var lastUsed: UInt64 { lastUse.load(ordering: .relaxed) }
    var inFlight: Int { outstanding.load(ordering: .relaxed) }

    enum PickFailure: Error {
        /// No endpoint to pick; the reason completes "<client id> …".
        case noEndpoints(String)
        case invalidAddress(ProxyError)
    }

    /// Picks an endpoint for one request at `now` and counts the request against it. `probe`
    /// tells whether the pick is the probe of an ejected endpoint; pass it back to `finished`.
    /// `avoiding`: endpoints the request has tried already (see `LoadBalancer.pick`).
    func pick(now: UInt64, avoiding: Set<Endpoint.Address> = []) -> Result<(endpoint: Endpoint, entry: Entry, probe: Bool), PickFailure> {
        let result = state.withLockedValue { state -> Result<(endpoint: Endpoint, entry: Entry, probe: Bool), PickFailure> in
            let endpoint: Endpoint
            switch state.balancer.pick(now: now, avoiding: avoiding, using: &state.random) {
            case .endpoint(let picked):
                endpoint = picked
            case .allEjected:
                let known = state.balancer.nodes.count
                return .failure(.noEndpoints("has all \(known) endpoint\(known == 1 ? "" : "s") ejected by failure accrual (failFast)"))
            case .none:
                switch state.addr {
                case .neg: return .failure(.noEndpoints("no longer exists in discovery"))
                case .failed(let reason): return .failure(.noEndpoints("could not be discovered: \(reason)"))
                case .pending: return .failure(.noEndpoints("has not been discovered yet"))
                case .bound: return .failure(.noEndpoints("has an empty endpoint set"))
                }
            }
            let probe = state.balancer.lastPickWasProbe
            if let entry = state.pools[endpoint.address] { return .success((endpoint, entry, probe)) }
            do {
                let entry = try makeEntry(endpoint)
                state.pools[endpoint.address] = entry
                return .success((endpoint, entry, probe))
            } catch {
                state.balancer.finished(endpoint.address, success: false, wasProbe: state.balancer.lastPickWasProbe, latency: 0, now: now, using: &state.random)
                return .failure(.invalidAddress(ProxyError(.connectFailed, "invalid endpoint address \(endpoint): \(error)")))
            }
        }
        if case .success(let (_, entry, _)) = result {
            outstanding.add(1, ordering: .relaxed)
            entry.health.load.increment()
        }
        return result
    }

    /// A request picked earlier ended: `success` feeds failure accrual, `latency` the estimates.
    func finished(_ address: Endpoint.Address, entry: Entry, success: Bool?, probe: Bool = false, latency: UInt64, now: UInt64) {
        outstanding.subtract(1, ordering: .relaxed)
        entry.health.load.decrement()
        var available: Int?
        let event = state.withLockedValue { state -> EndpointAccrual.Event? in
            let event = state.balancer.finished(address, success: success, wasProbe: probe, latency: latency, now: now, using: &state.random)
            if event != nil { available = state.balancer.counts(now: now).available }
            return event
        }
        switch event {
        case .ejected(let nanoseconds)?:
            entry.health.ejections.increment()
            logger.warning(probe ? "endpoint stays ejected: its probe failed" : "endpoint ejected by failure accrual", metadata: [
                LogKeys.router: "\(routerLabel)", LogKeys.client: "\(id)", LogKeys.endpoint: "\(address)",
                LogKeys.backoffMs: "\(nanoseconds / 1_000_000)", LogKeys.available: "\(available ?? 0)",
            ])
        case .revived?:
            entry.health.revivals.increment()
            logger.info("endpoint revived: its probe succeeded", metadata: [
                LogKeys.router: "\(routerLabel)", LogKeys.client: "\(id)", LogKeys.endpoint: "\(address)", LogKeys.available: "\(available ?? 0)",
            ])
        case nil:
            break
        }
        if let available { endpointMetrics.available.set(Int64(available)) }
    }

    private func makeEntry(_ endpoint: Endpoint) throws -> Entry {
        let pool = params.hostConnectionPool
        let limits = ConnectionPoolState<Int, Int, EndpointPool.LoopKey>.Limits(minSize: pool.minSize, maxSize: pool.maxSize, maxWaiters: pool.maxWaiters)
        let endpointPool = try EndpointPool(
            endpoint: endpoint,
            upstream: upstream,
            limits: limits,
            idleTime: [pool.idleTimeMs, params.clientSession.idleTimeMs].compactMap { $0 }.min().map { .milliseconds(Int64($0)) },
            connectTimeout: .milliseconds(Int64(params.connectTimeoutMs)),
            lifeTime: params.clientSession.lifeTimeMs.map { .milliseconds(Int64($0)) },
            metrics: meshMetrics.pool(router: routerLabel, client: id.description, endpoint: endpoint.description)
        )
        return Entry(
            pool: endpointPool,
            metrics: meshMetrics.endpoint(router: routerLabel, client: id.description, endpoint: endpoint.description),
            health: meshMetrics.endpointHealth(router: routerLabel, client: id.description, endpoint: endpoint.description)
        )
    }

    /// Stops the client: discovery updates are ignored and every pool drains.
    func close() {
        closedFlag.store(true, ordering: .relaxed)
        observation.withLockedValue { $0?.cancel(); $0 = nil }
        let entries = state.withLockedValue { state -> [Entry] in
            state.closed = true
            defer { state.pools = [:] }
            return Array(state.pools.values)
        }
        for entry in entries { entry.pool.drain() }
    }

    /// What the admin port shows for this client.
    func snapshot() -> ClientSnapshot {
        let now = NIODeadline.now().uptimeNanoseconds
        return state.withLockedValue { state in
            let endpoints = state.balancer.nodes.map { node -> ClientSnapshot.EndpointState in
                let pool = state.pools[node.endpoint.address]?.pool.snapshot
                let status: String
                switch node.accrual.status {
                case .alive: status = "available"
                case .ejected(let until): status = now >= until ? "probe due" : "ejected"
                case .probing: status = "probing"
                }
                let latency = state.balancer.latencyEstimate(node.endpoint.address, now: now) ?? 0
                return ClientSnapshot.EndpointState(
                    address: node.endpoint.description, weight: node.endpoint.weight, load: node.load,
                    status: status, latencyEstimateMs: latency / 1_000_000,
                    openConnections: pool?.open ?? 0, idleConnections: pool?.idle ?? 0
                )
            }
            return ClientSnapshot(id: id.description, router: routerLabel, balancer: params.loadBalancer.name, addr: state.addr, endpoints: endpoints)
        }
    }
}

/// A client's state for the admin port.
public struct ClientSnapshot: Sendable {
    public struct EndpointState: Sendable {
        public var address: String
        public var weight: Double
        public var load: Int
        /// `available`, `ejected`, `probe due` or `probing`.
        public var status: String
        /// The peak-EWMA latency estimate (ewma balancer only; 0 otherwise).
        public var latencyEstimateMs: Double
        public var openConnections: Int
        public var idleConnections: Int
    }

    public var id: String
    public var router: String
    public var balancer: String
    public var addr: Addr
    public var endpoints: [EndpointState]
}
