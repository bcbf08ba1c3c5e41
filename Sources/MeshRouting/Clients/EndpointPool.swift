// The driver of one endpoint's `ConnectionPoolState`: it owns the sockets, promises and timers
// that the pure state machine asks for. Every change goes through `withState`, which runs the
// machine under a lock and turns its actions into effects; the effects (completing promises,
// connecting, closing) run after the lock is released.
//
// Idle timers: the machine asks for one each time a connection goes idle, which is once per
// request. Scheduling a task each time (and never cancelling it) kept about rps × idleTime tasks
// alive; instead each connection has at most one timer in flight, and one that fires early —
// the connection was used and went idle again since — is scheduled again for the rest.

#if canImport(Glibc)
import Glibc
#endif
import MeshCore
import MeshTelemetry
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

final class EndpointPool: Sendable {
    struct LoopKey: Hashable, Sendable {
        let id: ObjectIdentifier
        init(_ loop: any EventLoop) { id = ObjectIdentifier(loop) }
    }

    typealias Machine = ConnectionPoolState<Int, Int, LoopKey>

    private struct Waiter {
        let promise: EventLoopPromise<PooledConnection>
        let loop: any EventLoop
    }

    /// The idle timer of one connection: the machine's latest token, since when it has been
    /// idle, and whether a task is scheduled.
    private struct IdleTimer {
        var token: UInt64
        var since: NIODeadline
        var scheduled: Bool
    }

    private struct State {
        var machine: Machine
        var waiters: [Int: Waiter] = [:]
        var connections: [Int: PooledConnection] = [:]
        var idleTimers: [Int: IdleTimer] = [:]
        var nextWaiter = 0
        var nextConnection = 0
        var draining = false
    }

    private enum Effect {
        case succeed(EventLoopPromise<PooledConnection>, PooledConnection)
        case fail(EventLoopPromise<PooledConnection>, ProxyError)
        case connect(any EventLoop, waiter: Int)
        case close(PooledConnection)
        case scheduleIdleTimer(PooledConnection, at: NIODeadline)
    }

    let endpoint: Endpoint
    let socketAddress: SocketAddress
    private let idleTime: TimeAmount?
    private let connectTimeout: TimeAmount
    /// Connections older than this are closed when they come back instead of being reused.
    private let lifeTime: TimeAmount?
    private let metrics: PoolMetrics
    /// How its connections speak.
    private let upstream: any UpstreamProtocol
    private let state: NIOLockedValueBox<State>

    init(endpoint: Endpoint, upstream: any UpstreamProtocol, limits: Machine.Limits, idleTime: TimeAmount?, connectTimeout: TimeAmount, lifeTime: TimeAmount? = nil, metrics: PoolMetrics) throws {
        self.endpoint = endpoint
        self.upstream = upstream
        self.socketAddress = try SocketAddress(ipAddress: endpoint.host, port: endpoint.port)
        self.idleTime = idleTime
        self.connectTimeout = connectTimeout
        self.lifeTime = lifeTime
        self.metrics = metrics
        self.state = NIOLockedValueBox(State(machine: Machine(limits: limits)))
    }

    enum Lease {
        /// An idle connection on the caller's loop, handed over at once.
        case ready(PooledConnection)
        /// Wait for one; the id lets the caller give up.
        case pending(waiter: Int, future: EventLoopFuture<PooledConnection>)
    }

    /// Asks for a connection on `loop` (the caller's loop): at once when one is idle there (the
    /// common case, with no promise to allocate), else later.
    func lease(on loop: any EventLoop) -> Lease {
        let idle = state.withLockedValue { state -> PooledConnection? in
            guard !state.draining, let id = state.machine.leaseIdle(on: LoopKey(loop)) else { return nil }
            return state.connections[id]
        }
        if let idle {
            metrics.idle.decrement()
            return .ready(idle)
        }
        let (waiter, future) = leaseLater(on: loop)
        return .pending(waiter: waiter, future: future)
    }

    private func leaseLater(on loop: any EventLoop) -> (waiter: Int, future: EventLoopFuture<PooledConnection>) {
        let promise = loop.makePromise(of: PooledConnection.self)
        var waiterID = 0
        let effects = withState { state -> [Machine.Action] in
            waiterID = state.nextWaiter
            state.nextWaiter += 1
            if state.draining {
                state.waiters[waiterID] = Waiter(promise: promise, loop: loop)
                return [.reject(waiterID)]
            }
            state.waiters[waiterID] = Waiter(promise: promise, loop: loop)
            return [state.machine.leaseRequested(by: waiterID, on: LoopKey(loop))]
        }
        perform(effects)
        return (waiterID, promise.futureResult)
    }

    /// The caller no longer wants the connection it asked for.
    func cancel(waiter waiterID: Int) {
        var removed: Waiter?
        let effects = withState { state -> [Machine.Action] in
            state.machine.waiterCancelled(waiterID)
            removed = state.waiters.removeValue(forKey: waiterID)
            return []
        }
        perform(effects)
        removed?.promise.fail(ProxyError(.shuttingDown, "request cancelled"))
    }

    /// An exchange is done with `connection`.
    func release(_ connection: PooledConnection, reusable: Bool) {
        var closeIt = false
        let tooOld = lifeTime.map { NIODeadline.now() - connection.openedAt >= $0 } ?? false
        let effects = withState { state -> [Machine.Action] in
            let reuse = reusable && !state.draining && !tooOld
            if !reuse {
                state.connections.removeValue(forKey: connection.id)
                state.idleTimers.removeValue(forKey: connection.id)
                closeIt = true
            }
            return [state.machine.connectionReleased(connection.id, on: LoopKey(connection.eventLoop), reusable: reuse)]
        }
        if closeIt { connection.channel.close(promise: nil) }
        perform(effects)
    }

    /// Stops lending connections: idle ones close now, leased ones when they come back.
    func drain() {
        let effects = withState { state -> [Machine.Action] in
            state.draining = true
            return state.machine.shutdown()
        }
        perform(effects)
    }

    /// Idle timers in flight (at most one per connection).
    var scheduledIdleTimers: Int {
        state.withLockedValue { state in state.idleTimers.values.reduce(0) { $0 + ($1.scheduled ? 1 : 0) } }
    }

    var snapshot: (open: Int, idle: Int, leased: Int, waiters: Int) {
        state.withLockedValue { ($0.machine.total, $0.machine.idleCount, $0.machine.leased, $0.machine.waiterCount) }
    }

    // MARK: the funnel

    private func withState(_ body: (inout State) -> [Machine.Action], error: ProxyError? = nil) -> [Effect] {
        state.withLockedValue { state in
            let actions = body(&state)
            var effects: [Effect] = []
            for action in actions {
                translate(action, state: &state, error: error, into: &effects)
            }
            metrics.update(open: state.machine.total, idle: state.machine.idleCount, waiters: state.machine.waiterCount)
            return effects
        }
    }

    private func translate(_ action: Machine.Action, state: inout State, error: ProxyError?, into effects: inout [Effect]) {
        switch action {
        case .lease(let id, let waiterID):
            guard let connection = state.connections[id] else { return }
            if let waiter = state.waiters.removeValue(forKey: waiterID) {
                effects.append(.succeed(waiter.promise, connection))
            } else {
                // The waiter gave up between asking and now: hand the connection straight back.
                translate(state.machine.connectionReleased(id, on: LoopKey(connection.eventLoop), reusable: true), state: &state, error: error, into: &effects)
            }
        case .connect(_, let waiterID):
            guard let waiter = state.waiters[waiterID] else {
                // Nobody wants it any more: give the place back.
                for next in state.machine.connectFailed(for: waiterID).dropFirst() {
                    translate(next, state: &state, error: error, into: &effects)
                }
                return
            }
            effects.append(.connect(waiter.loop, waiter: waiterID))
        case .replace(let id, _, let waiterID):
            state.idleTimers.removeValue(forKey: id)
            if let connection = state.connections.removeValue(forKey: id) { effects.append(.close(connection)) }
            if let waiter = state.waiters[waiterID] { effects.append(.connect(waiter.loop, waiter: waiterID)) }
        case .close(let id):
            state.idleTimers.removeValue(forKey: id)
            if let connection = state.connections.removeValue(forKey: id) { effects.append(.close(connection)) }
        case .armIdleTimer(let id, let token):
            guard let idleTime, let connection = state.connections[id] else { return }
            let now = NIODeadline.now()
            let alreadyScheduled = state.idleTimers[id]?.scheduled ?? false
            state.idleTimers[id] = IdleTimer(token: token, since: now, scheduled: true)
            if !alreadyScheduled { effects.append(.scheduleIdleTimer(connection, at: now + idleTime)) }
        case .reject(let waiterID):
            if let waiter = state.waiters.removeValue(forKey: waiterID) {
                metrics.rejected.increment()
                let reason = state.draining
                    ? ProxyError(.noEndpoints, "endpoint \(endpoint) was removed by discovery", retryable: true)
                    : ProxyError(.poolExhausted, "connection pool to \(endpoint) is full (maxSize \(state.machine.limits.maxSize), maxWaiters \(state.machine.limits.maxWaiters))", retryable: true)
                effects.append(.fail(waiter.promise, reason))
            }
        case .failConnect(let waiterID):
            if let waiter = state.waiters.removeValue(forKey: waiterID) {
                effects.append(.fail(waiter.promise, error ?? ProxyError(.connectFailed, "cannot connect to \(endpoint)", retryable: true)))
            }
        case .queued, .none:
            break
        }
    }

    private func perform(_ effects: [Effect]) {
        for effect in effects {
            switch effect {
            case .succeed(let promise, let connection):
                promise.succeed(connection)
            case .fail(let promise, let error):
                promise.fail(error)
            case .close(let connection):
                connection.channel.close(promise: nil)
            case .connect(let loop, let waiterID):
                connect(on: loop, for: waiterID)
            case .scheduleIdleTimer(let connection, let deadline):
                connection.eventLoop.scheduleTask(deadline: deadline) { [self] in
                    idleTimerFired(connection)
                }
            }
        }
    }

    // MARK: connecting

    private func connect(on loop: any EventLoop, for waiterID: Int) {
        metrics.connects.increment()
        ClientBootstrap(group: loop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(connectTimeout)
            .channelInitializer { [upstream] channel in
                channel.eventLoop.makeCompletedFuture { try upstream.configure(channel) }
            }
            .connect(to: socketAddress)
            .flatMap { [upstream, connectTimeout] channel in
                Self.whenReady(channel, upstream: upstream, within: connectTimeout)
            }
            .whenComplete { [self] result in
                switch result {
                case .success(let channel):
                    established(channel, for: waiterID)
                case .failure(let error):
                    metrics.connectFailures.increment()
                    let timedOut = ConnectErrorText.isTimeout(error)
                    let reason = ProxyError(.connectFailed, "cannot connect to \(endpoint): \(ConnectErrorText.describe(error))", retryable: true, connectTimedOut: timedOut)
                    let effects = withState({ state in state.machine.connectFailed(for: waiterID) }, error: reason)
                    perform(effects)
                }
            }
    }

    /// The channel once its protocol says it can carry requests (a TLS handshake done), within
    /// `within` of the TCP connection (the connect timeout covers both); a connection that does
    /// not get there is closed.
    private static func whenReady(_ channel: any Channel, upstream: any UpstreamProtocol, within: TimeAmount) -> EventLoopFuture<any Channel> {
        let ready = upstream.ready(channel)
        let loop = channel.eventLoop
        let promise = loop.makePromise(of: (any Channel).self)
        let done = NIOLoopBoundBox(false, eventLoop: loop)
        let timer = loop.assumeIsolated().scheduleTask(in: within) {
            guard !done.value else { return }
            done.value = true
            channel.close(promise: nil)
            promise.fail(ReadinessTimeout(milliseconds: within.nanoseconds / 1_000_000))
        }
        ready.assumeIsolated().whenComplete { result in
            timer.cancel()
            guard !done.value else { return }
            done.value = true
            switch result {
            case .success: promise.succeed(channel)
            case .failure(let error):
                channel.close(promise: nil)
                promise.fail(error)
            }
        }
        return promise.futureResult
    }

    private func established(_ channel: any Channel, for waiterID: Int) {
        guard let handler = upstream.connection(of: channel) else {
            channel.close(promise: nil)
            let effects = withState({ state in state.machine.connectFailed(for: waiterID) }, error: ProxyError(.connectFailed, "connection to \(endpoint) closed at once"))
            perform(effects)
            return
        }
        let drained = ProxyError(.noEndpoints, "endpoint \(endpoint) was removed by discovery", retryable: true)
        var closeIt = false
        let effects = withState({ state -> [Machine.Action] in
            if state.draining {
                closeIt = true
                return state.machine.connectFailed(for: waiterID)
            }
            let id = state.nextConnection
            state.nextConnection += 1
            state.connections[id] = PooledConnection(id: id, channel: channel, handler: handler, openedAt: NIODeadline.now())
            handler.onIdleClose = { [weak self] in self?.idleConnectionClosed(id) }
            return [state.machine.connectionEstablished(id, on: LoopKey(channel.eventLoop), for: waiterID, waiterStillWants: state.waiters[waiterID] != nil)]
        }, error: drained)
        if closeIt { channel.close(promise: nil) }
        perform(effects)
    }

    /// A connection's one idle timer ran out: it closes if it has been idle for `idleTime` since
    /// it last went idle; if it was used since, the timer runs again for the rest of that time.
    private func idleTimerFired(_ connection: PooledConnection) {
        guard let idleTime else { return }
        var runAgainAt: NIODeadline?
        let effects = withState { state -> [Machine.Action] in
            guard var timer = state.idleTimers[connection.id] else { return [] }
            let due = timer.since + idleTime
            if due > NIODeadline.now() {
                runAgainAt = due
                return []
            }
            timer.scheduled = false
            state.idleTimers[connection.id] = timer
            return [state.machine.idleTimerFired(connection.id, token: timer.token)]
        }
        if let runAgainAt {
            connection.eventLoop.scheduleTask(deadline: runAgainAt) { [self] in idleTimerFired(connection) }
        }
        perform(effects)
    }

    private func idleConnectionClosed(_ id: Int) {
        _ = withState { state in
            state.idleTimers.removeValue(forKey: id)
            state.connections.removeValue(forKey: id)
            state.machine.idleConnectionClosed(id)
            return []
        }
    }
}
