// A map whose values live only as long as someone else holds them: the endpoint sets that
// system namers and transformers make for names derived from requests (`/$/inet/HOST/PORT` from
// a Host header, `/%/io.l5d.port/4141/…`). They are held by what uses them — the routers'
// binding caches and clients, both bounded (`bindingCache`) — so this map needs no bound of its
// own: an entry whose value is gone is dead, and dead entries are swept once they outnumber the
// live ones. (They were kept forever before: one per distinct Host ever seen.)

import NIOConcurrencyHelpers

public final class WeakValueCache<Key: Hashable & Sendable, Value: AnyObject & Sendable>: Sendable {
    private struct Entry: @unchecked Sendable {
        weak var value: Value?
    }

    private struct State {
        var entries: [Key: Entry] = [:]
        /// Sweep dead entries when the map reaches this size.
        var sweepAt = 64
    }

    private let state = NIOLockedValueBox(State())

    public init() {}

    /// The live value for `key`, or the one `make` creates (and the map remembers weakly).
    public func value(for key: Key, make: () -> Value) -> Value {
        state.withLockedValue { state in
            if let existing = state.entries[key]?.value { return existing }
            let created = make()
            state.entries[key] = Entry(value: created)
            if state.entries.count >= state.sweepAt {
                state.entries = state.entries.filter { $0.value.value != nil }
                state.sweepAt = max(64, state.entries.count * 2)
            }
            return created
        }
    }

    /// Entries whose value is still alive.
    public var liveCount: Int {
        state.withLockedValue { state in state.entries.values.reduce(0) { $0 + ($1.value == nil ? 0 : 1) } }
    }

    /// Entries in the map, dead ones not yet swept included.
    public var storedCount: Int {
        state.withLockedValue { $0.entries.count }
    }
}
