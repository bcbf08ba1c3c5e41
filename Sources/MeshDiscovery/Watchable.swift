// A value that changes over time and tells its observers (Finagle's `Var`): discovery publishes
// endpoint sets through it, clients observe it.

import NIOConcurrencyHelpers

/// A current value plus change notifications. Observers run on the thread that sets the value,
/// after the lock is released, in the order they registered.
public final class Watchable<Value: Sendable>: Sendable {
    private struct State {
        var value: Value
        var version: UInt64 = 0
        var nextObserver = 0
        var observers: [(id: Int, callback: @Sendable (Value) -> Void)] = []
    }

    private let state: NIOLockedValueBox<State>
    /// Things that live as long as this value does (the observation feeding a derived value).
    private let attachments = NIOLockedValueBox<[any AnyObject & Sendable]>([])

    public init(_ initial: Value) {
        self.state = NIOLockedValueBox(State(value: initial))
    }

    /// Keeps `object` alive for as long as this value lives.
    public func keepAlive(_ object: any AnyObject & Sendable) {
        attachments.withLockedValue { $0.append(object) }
    }

    public var value: Value { state.withLockedValue { $0.value } }

    /// Bumped on every `set`.
    public var version: UInt64 { state.withLockedValue { $0.version } }

    /// Replaces the value and notifies every observer.
    public func set(_ value: Value) {
        let observers = state.withLockedValue { state -> [@Sendable (Value) -> Void] in
            state.value = value
            state.version &+= 1
            return state.observers.map(\.callback)
        }
        for observer in observers { observer(value) }
    }

    /// Calls `callback` with the current value now, and with every later value until the returned
    /// observation is cancelled or released.
    public func observe(_ callback: @escaping @Sendable (Value) -> Void) -> Observation {
        let (id, current) = state.withLockedValue { state -> (Int, Value) in
            let id = state.nextObserver
            state.nextObserver += 1
            state.observers.append((id, callback))
            return (id, state.value)
        }
        callback(current)
        return Observation { [weak self] in
            self?.state.withLockedValue { state in state.observers.removeAll { $0.id == id } }
        }
    }
}

/// A registration that can be undone.
public final class Observation: Sendable {
    private let cancelAction: NIOLockedValueBox<(@Sendable () -> Void)?>

    init(_ cancel: @escaping @Sendable () -> Void) {
        self.cancelAction = NIOLockedValueBox(cancel)
    }

    public func cancel() {
        let action = cancelAction.withLockedValue { action -> (@Sendable () -> Void)? in
            defer { action = nil }
            return action
        }
        action?()
    }

    deinit { cancel() }
}
