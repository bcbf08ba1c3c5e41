// One client per bound name (e.g. `/#/io.l5d.fs/users`), shared by every request that binds to
// it: the live endpoint set from discovery, the load balancer over it, and a connection pool per
// endpoint. Discovery updates keep the balancer state of endpoints that stay; endpoints that go
// drain (in-flight requests finish, idle connections close) and new ones take load at once.

import MeshConfig
import MeshCore
import MeshDiscovery
import MeshTelemetry
import NIOConcurrencyHelpers
import NIOCore
import Synchronization

final class BoundClient: Sendable {
    let id: Path
    let routerLabel: String
    let metrics: RequestMetrics
    private let meshMetrics: MeshMetrics
    private let poolConfig: HostConnectionPoolConfig
    private let endpointsGauge: MetricGauge

    private struct State {
        var addr: Addr = .pending
        var balancer: P2CBalancer
        var pools: [Endpoint.Address: Entry] = [:]
        var readyPromises: [EventLoopPromise<Void>] = []
        var closed = false
    }

    struct Entry {
        let pool: EndpointPool
        let metrics: RequestMetrics
    }

    private let state: NIOLockedValueBox<State>
    private let observation = NIOLockedValueBox<Observation?>(nil)
    /// Uptime (ns) of the last request routed here, for idle eviction.
    private let lastUse = Atomic<UInt64>(0)
    /// Requests picked and not yet finished.
    private let outstanding = Atomic<Int>(0)

    init(bound: BoundName, routerLabel: String, client: ClientConfig, metrics: MeshMetrics) {
        self.id = bound.id
        self.routerLabel = routerLabel
        self.meshMetrics = metrics
        self.poolConfig = client.hostConnectionPool
        self.metrics = metrics.client(router: routerLabel, client: bound.id.description)
        self.endpointsGauge = metrics.clientEndpoints(router: routerLabel, client: bound.id.description)
        let maxEffort: Int
        switch client.loadBalancer {
        case .p2c(let effort): maxEffort = effort
        }
        self.state = NIOLockedValueBox(State(balancer: P2CBalancer(maxEffort: maxEffort)))
        let observation = bound.addr.observe { [weak self] addr in self?.update(addr) }
        self.observation.withLockedValue { $0 = observation }
    }

    /// Discovery published a new answer.
    private func update(_ addr: Addr) {
        var drained: [Entry] = []
        var ready: [EventLoopPromise<Void>] = []
        state.withLockedValue { state in
            guard !state.closed else { return }
            // A failed lookup keeps the last good endpoints.
            if case .failed = addr, case .bound = state.addr { return }
            state.addr = addr
            let endpoints = addr.endpoints
            state.balancer.update(endpoints: endpoints)
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
        endpointsGauge.set(Int64(addr.endpoints.count))
        for entry in drained {
            entry.pool.drain()
            entry.pool.unregisterMetrics()
            entry.metrics.unregister()
        }
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

    /// Marks the client used at `now` (uptime nanoseconds).
    func touch(now: UInt64) {
        lastUse.store(now, ordering: .relaxed)
    }

    var lastUsed: UInt64 { lastUse.load(ordering: .relaxed) }
    var inFlight: Int { outstanding.load(ordering: .relaxed) }

    /// Picks an endpoint for one request and counts the request against it.
    func pick(using random: inout SplitMix64) -> Result<(Endpoint, Entry), PickFailure> {
        var randomCopy = random
        defer { random = randomCopy }
        let result = state.withLockedValue { state -> Result<(Endpoint, Entry), PickFailure> in
            guard let endpoint = state.balancer.pick(using: &randomCopy) else {
                switch state.addr {
                case .neg: return .failure(.noEndpoints("no longer exists in discovery"))
                case .failed(let reason): return .failure(.noEndpoints("could not be discovered: \(reason)"))
                case .pending: return .failure(.noEndpoints("has not been discovered yet"))
                case .bound: return .failure(.noEndpoints("has an empty endpoint set"))
                }
            }
            if let entry = state.pools[endpoint.address] { return .success((endpoint, entry)) }
            do {
                let entry = try makeEntry(endpoint)
                state.pools[endpoint.address] = entry
                return .success((endpoint, entry))
            } catch {
                state.balancer.requestFinished(endpoint.address)
                return .failure(.invalidAddress(ProxyError(.connectFailed, "invalid endpoint address \(endpoint): \(error)")))
            }
        }
        if case .success = result { outstanding.add(1, ordering: .relaxed) }
        return result
    }

    enum PickFailure: Error {
        /// No endpoint to pick; the reason completes "<client id> …".
        case noEndpoints(String)
        case invalidAddress(ProxyError)
    }

    /// A request picked earlier has finished.
    func finished(_ address: Endpoint.Address) {
        outstanding.subtract(1, ordering: .relaxed)
        state.withLockedValue { $0.balancer.requestFinished(address) }
    }

    private func makeEntry(_ endpoint: Endpoint) throws -> Entry {
        let limits = ConnectionPoolState<Int, Int, EndpointPool.LoopKey>.Limits(
            minSize: poolConfig.minSize, maxSize: poolConfig.maxSize, maxWaiters: poolConfig.maxWaiters
        )
        let pool = try EndpointPool(
            endpoint: endpoint,
            limits: limits,
            idleTime: poolConfig.idleTimeMs.map { .milliseconds(Int64($0)) },
            connectTimeout: .seconds(5),
            metrics: meshMetrics.pool(router: routerLabel, client: id.description, endpoint: endpoint.description)
        )
        let metrics = meshMetrics.endpoint(router: routerLabel, client: id.description, endpoint: endpoint.description)
        return Entry(pool: pool, metrics: metrics)
    }

    /// Stops the client: discovery updates are ignored and every pool drains.
    func close() {
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
        state.withLockedValue { state in
            let endpoints = state.balancer.nodes.map { node -> ClientSnapshot.EndpointState in
                let pool = state.pools[node.endpoint.address]?.pool.snapshot
                return ClientSnapshot.EndpointState(
                    address: node.endpoint.description, weight: node.endpoint.weight, load: node.load,
                    available: node.isAvailable, openConnections: pool?.open ?? 0, idleConnections: pool?.idle ?? 0
                )
            }
            return ClientSnapshot(id: id.description, router: routerLabel, addr: state.addr, endpoints: endpoints)
        }
    }
}

/// A client's state for the admin port.
public struct ClientSnapshot: Sendable {
    public struct EndpointState: Sendable {
        public var address: String
        public var weight: Double
        public var load: Int
        public var available: Bool
        public var openConnections: Int
        public var idleConnections: Int
    }

    public var id: String
    public var router: String
    public var addr: Addr
    public var endpoints: [EndpointState]
}
