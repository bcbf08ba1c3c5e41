// A bounded cache that forgets what was used longest ago: Linkerd's `bindingCache` limits.

/// A map with at most `capacity` entries; inserting into a full cache evicts the entry whose
/// last use is oldest. Lookups and updates count as uses. Pure value; callers lock around it.
public struct LRUCache<Key: Hashable, Value> {
    @usableFromInline
    struct Entry {
        @usableFromInline var value: Value
        @usableFromInline var lastUse: UInt64

        @inlinable
        init(value: Value, lastUse: UInt64) {
            self.value = value
            self.lastUse = lastUse
        }
    }

    public let capacity: Int
    @usableFromInline var entries: [Key: Entry] = [:]
    @usableFromInline var clock: UInt64 = 0

    public init(capacity: Int) {
        precondition(capacity >= 1, "an LRU cache holds at least one entry")
        self.capacity = capacity
    }

    public var count: Int { entries.count }

    /// The value for `key`, marking it used.
    @inlinable
    public mutating func get(_ key: Key) -> Value? {
        guard entries[key] != nil else { return nil }
        clock &+= 1
        entries[key]!.lastUse = clock
        return entries[key]!.value
    }

    /// Stores `value`; returns the evicted entry, if the cache was full.
    @discardableResult
    public mutating func set(_ key: Key, _ value: Value) -> (key: Key, value: Value)? {
        clock &+= 1
        if entries[key] != nil {
            entries[key] = Entry(value: value, lastUse: clock)
            return nil
        }
        var evicted: (Key, Value)?
        if entries.count >= capacity, let oldest = entries.min(by: { $0.value.lastUse < $1.value.lastUse }) {
            entries[oldest.key] = nil
            evicted = (oldest.key, oldest.value.value)
        }
        entries[key] = Entry(value: value, lastUse: clock)
        return evicted
    }

    /// Stores `value` without evicting anything, even past `capacity`; pair with `evictOldest`.
    public mutating func insert(_ key: Key, _ value: Value) {
        clock &+= 1
        entries[key] = Entry(value: value, lastUse: clock)
    }

    /// While over capacity, removes the least recently used entries that `canEvict` allows.
    public mutating func evictOverflow(where canEvict: (Value) -> Bool) -> [(key: Key, value: Value)] {
        var evicted: [(Key, Value)] = []
        while entries.count > capacity {
            guard let oldest = entries.filter({ canEvict($0.value.value) }).min(by: { $0.value.lastUse < $1.value.lastUse }) else { break }
            entries[oldest.key] = nil
            evicted.append((oldest.key, oldest.value.value))
        }
        return evicted
    }

    @discardableResult
    public mutating func remove(_ key: Key) -> Value? {
        entries.removeValue(forKey: key)?.value
    }

    /// Removes and returns every entry for which `shouldRemove` is true.
    public mutating func removeAll(where shouldRemove: (Key, Value) -> Bool) -> [(key: Key, value: Value)] {
        let doomed = entries.filter { shouldRemove($0.key, $0.value.value) }
        for key in doomed.keys { entries[key] = nil }
        return doomed.map { ($0.key, $0.value.value) }
    }

    public var values: [Value] { entries.values.map(\.value) }
}

extension LRUCache: Sendable where Key: Sendable, Value: Sendable {}
extension LRUCache.Entry: Sendable where Key: Sendable, Value: Sendable {}
