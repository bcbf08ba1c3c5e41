// The policy of one endpoint's connection pool (Linkerd's `hostConnectionPool`), as a pure state
// machine in the style of async-http-client's pool: every event returns the actions the driver
// must perform; the driver owns sockets, timers and promises.
//
// Connections live on event loops and are only ever used on the loop they belong to, so a request
// never hops threads. The limits are per endpoint, across all loops: at most `maxSize`
// connections (idle, leased or being opened), at most `maxWaiters` requests queued for one, and
// idle connections beyond `minSize` are closed after `idleTime`. When the pool is full and the
// only idle connection sits on another loop, that connection is closed and a new one opened on
// the requester's loop: the limit holds and nothing crosses threads.

import DequeModule

/// One endpoint's pool. `Connection`, `Waiter` and `Loop` are the driver's identifiers.
public struct ConnectionPoolState<Connection: Hashable & Sendable, Waiter: Hashable & Sendable, Loop: Hashable & Sendable>: Sendable {
    public struct Limits: Sendable, Hashable {
        /// Idle connections kept open even when idle for longer than `idleTimeNanos`.
        public var minSize: Int
        /// Connections open or opening at once.
        public var maxSize: Int
        /// Requests queued for a connection; past this they are rejected.
        public var maxWaiters: Int

        public init(minSize: Int = 0, maxSize: Int = .max, maxWaiters: Int = .max) {
            self.minSize = minSize
            self.maxSize = maxSize
            self.maxWaiters = maxWaiters
        }
    }

    /// What the driver must do.
    public enum Action: Equatable, Sendable {
        /// Give `connection` to `waiter`.
        case lease(Connection, to: Waiter)
        /// Open a connection on `loop`; report `connectionEstablished` or `connectFailed` for `waiter`.
        case connect(on: Loop, for: Waiter)
        /// Close `connection`, and open one on `loop` for `waiter` in its place.
        case replace(Connection, connectOn: Loop, for: Waiter)
        /// Close `connection`.
        case close(Connection)
        /// Arm the idle timer of `connection`; report `idleTimerFired` with `token`.
        case armIdleTimer(Connection, token: UInt64)
        /// Fail `waiter`: the pool and its queue are full.
        case reject(Waiter)
        /// Fail `waiter` with the connect error.
        case failConnect(Waiter)
        /// The waiter was queued; nothing to do now.
        case queued
        case none
    }

    private struct QueuedWaiter: Sendable {
        var waiter: Waiter
        var loop: Loop
    }

    private struct IdleEntry: Sendable {
        var connection: Connection
        var loop: Loop
        var token: UInt64
    }

    public let limits: Limits
    /// Connections open, leased or being opened.
    public private(set) var total = 0
    public private(set) var leased = 0
    private var idle: [IdleEntry] = []
    private var waiters: Deque<QueuedWaiter> = []
    private var nextToken: UInt64 = 0

    public init(limits: Limits) {
        self.limits = limits
    }

    public var idleCount: Int { idle.count }
    public var waiterCount: Int { waiters.count }
    /// Nothing open, nothing queued: the pool may be dropped.
    public var isQuiescent: Bool { total == 0 && waiterCount == 0 }

    // MARK: events

    /// A request on `loop` takes an idle connection there, if there is one (the most recently
    /// used); nil changes nothing, and the request goes through `leaseRequested`.
    public mutating func leaseIdle(on loop: Loop) -> Connection? {
        guard let index = idle.lastIndex(where: { $0.loop == loop }) else { return nil }
        leased += 1
        return idle.remove(at: index).connection
    }

    /// A request on `loop` wants a connection.
    public mutating func leaseRequested(by waiter: Waiter, on loop: Loop) -> Action {
        if let index = idle.lastIndex(where: { $0.loop == loop }) {
            let entry = idle.remove(at: index)
            leased += 1
            return .lease(entry.connection, to: waiter)
        }
        if total < limits.maxSize {
            total += 1
            return .connect(on: loop, for: waiter)
        }
        if !idle.isEmpty {
            // Full, but an idle connection elsewhere can give up its place.
            let entry = idle.removeFirst()
            return .replace(entry.connection, connectOn: loop, for: waiter)
        }
        if waiterCount < limits.maxWaiters {
            waiters.append(QueuedWaiter(waiter: waiter, loop: loop))
            return .queued
        }
        return .reject(waiter)
    }

    /// A connection opened for `waiter` (from `.connect` or `.replace`) is up.
    /// `waiterStillWants` is false when the waiter gave up meanwhile.
    public mutating func connectionEstablished(_ connection: Connection, on loop: Loop, for waiter: Waiter, waiterStillWants: Bool) -> Action {
        leased += 1
        if waiterStillWants {
            return .lease(connection, to: waiter)
        }
        return connectionReleased(connection, on: loop, reusable: true)
    }

    /// Opening a connection for `waiter` failed. The waiter is failed; queued waiters get a try of
    /// their own at the place that freed up.
    public mutating func connectFailed(for waiter: Waiter) -> [Action] {
        total -= 1
        var actions: [Action] = [.failConnect(waiter)]
        if let next = dequeueWaiter() {
            total += 1
            actions.append(.connect(on: next.loop, for: next.waiter))
        }
        return actions
    }

    /// A leased connection came back. `reusable` is false when the exchange left it unusable
    /// (closed by either side, protocol error, body not fully read).
    public mutating func connectionReleased(_ connection: Connection, on loop: Loop, reusable: Bool) -> Action {
        leased -= 1
        guard reusable else {
            total -= 1
            if let next = dequeueWaiter() {
                total += 1
                return .connect(on: next.loop, for: next.waiter)
            }
            return .none
        }
        if let next = dequeueWaiter() {
            if next.loop == loop {
                leased += 1
                return .lease(connection, to: next.waiter)
            }
            return .replace(connection, connectOn: next.loop, for: next.waiter)
        }
        nextToken &+= 1
        idle.append(IdleEntry(connection: connection, loop: loop, token: nextToken))
        return .armIdleTimer(connection, token: nextToken)
    }

    /// An idle connection was closed by the peer or failed.
    public mutating func idleConnectionClosed(_ connection: Connection) {
        if let index = idle.firstIndex(where: { $0.connection == connection }) {
            idle.remove(at: index)
            total -= 1
        }
    }

    /// A connection's idle timer ran out.
    public mutating func idleTimerFired(_ connection: Connection, token: UInt64) -> Action {
        guard let index = idle.firstIndex(where: { $0.connection == connection && $0.token == token }) else {
            return .none
        }
        guard total > limits.minSize else { return .none }
        idle.remove(at: index)
        total -= 1
        return .close(connection)
    }

    /// A queued waiter gave up (its request was cancelled or timed out).
    public mutating func waiterCancelled(_ waiter: Waiter) {
        guard let index = waiters.firstIndex(where: { $0.waiter == waiter }) else { return }
        waiters.remove(at: index)
    }

    /// The pool is shutting down: close every idle connection and fail every waiter.
    public mutating func shutdown() -> [Action] {
        var actions: [Action] = idle.map { .close($0.connection) }
        total -= idle.count
        idle.removeAll()
        while let next = dequeueWaiter() { actions.append(.reject(next.waiter)) }
        return actions
    }

    private mutating func dequeueWaiter() -> QueuedWaiter? {
        waiters.popFirst()
    }
}
