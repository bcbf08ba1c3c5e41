// A bounded cache that forgets what was used longest ago: Linkerd's `bindingCache` limits.
//
// Every operation a request makes (`get`, `set`) is O(1): entries sit in slots of one array,
// threaded on a doubly linked list from the most to the least recently used, and a dictionary
// maps keys to slots. The caches are shared by every event loop under one lock each, so a scan
// of all entries per miss (as the first version did) held that lock for O(capacity).

/// A map with at most `capacity` entries; inserting into a full cache evicts the entry used
/// longest ago. Lookups and updates count as uses. Pure value; callers lock around it.
public struct LRUCache<Key: Hashable, Value> {
    @usableFromInline
    struct Slot {
        @usableFromInline var key: Key
        @usableFromInline var value: Value
        /// Towards the most recently used end; -1 at the head.
        @usableFromInline var newer: Int
        /// Towards the least recently used end; -1 at the tail.
        @usableFromInline var older: Int
    }

    public let capacity: Int
    @usableFromInline var slots: [Slot?] = []
    @usableFromInline var index: [Key: Int] = [:]
    @usableFromInline var free: [Int] = []
    /// Most recently used.
    @usableFromInline var head = -1
    /// Least recently used.
    @usableFromInline var tail = -1

    public init(capacity: Int) {
        precondition(capacity >= 1, "an LRU cache holds at least one entry")
        self.capacity = capacity
    }

    public var count: Int { index.count }

    /// The value for `key`, marking it used.
    @inlinable
    public mutating func get(_ key: Key) -> Value? {
        guard let slot = index[key] else { return nil }
        moveToHead(slot)
        return slots[slot]!.value
    }

    /// The value for `key`, without marking it used.
    public func peek(_ key: Key) -> Value? {
        index[key].map { slots[$0]!.value }
    }

    /// Stores `value`; returns the evicted entry, if the cache was full.
    @discardableResult
    public mutating func set(_ key: Key, _ value: Value) -> (key: Key, value: Value)? {
        if let slot = index[key] {
            slots[slot]!.value = value
            moveToHead(slot)
            return nil
        }
        var evicted: (key: Key, value: Value)?
        if index.count >= capacity, tail >= 0 {
            evicted = removeSlot(tail)
        }
        insertAtHead(key, value)
        return evicted
    }

    /// Stores `value` without evicting anything, even past `capacity`; pair with `evictOverflow`.
    public mutating func insert(_ key: Key, _ value: Value) {
        if let slot = index[key] {
            slots[slot]!.value = value
            moveToHead(slot)
        } else {
            insertAtHead(key, value)
        }
    }

    /// While over capacity, removes the least recently used entries that `canEvict` allows.
    /// Walks from the oldest end, so the common case (the oldest can go) is O(1) an eviction.
    public mutating func evictOverflow(where canEvict: (Value) -> Bool) -> [(key: Key, value: Value)] {
        var evicted: [(key: Key, value: Value)] = []
        var cursor = tail
        while index.count > capacity, cursor >= 0 {
            let slot = slots[cursor]!
            let next = slot.newer
            if canEvict(slot.value) { evicted.append(removeSlot(cursor)) }
            cursor = next
        }
        return evicted
    }

    @discardableResult
    public mutating func remove(_ key: Key) -> Value? {
        guard let slot = index[key] else { return nil }
        return removeSlot(slot).value
    }

    /// Removes and returns every entry for which `shouldRemove` is true. O(count).
    public mutating func removeAll(where shouldRemove: (Key, Value) -> Bool) -> [(key: Key, value: Value)] {
        var removed: [(key: Key, value: Value)] = []
        var cursor = tail
        while cursor >= 0 {
            let slot = slots[cursor]!
            let next = slot.newer
            if shouldRemove(slot.key, slot.value) { removed.append(removeSlot(cursor)) }
            cursor = next
        }
        return removed
    }

    /// Every value, most recently used first.
    public var values: [Value] {
        var out: [Value] = []
        out.reserveCapacity(index.count)
        var cursor = head
        while cursor >= 0 {
            out.append(slots[cursor]!.value)
            cursor = slots[cursor]!.older
        }
        return out
    }

    // MARK: the list

    @usableFromInline
    mutating func moveToHead(_ slot: Int) {
        guard slot != head else { return }
        unlink(slot)
        link(atHead: slot)
    }

    @usableFromInline
    mutating func unlink(_ slot: Int) {
        let newer = slots[slot]!.newer
        let older = slots[slot]!.older
        if newer >= 0 { slots[newer]!.older = older } else { head = older }
        if older >= 0 { slots[older]!.newer = newer } else { tail = newer }
        slots[slot]!.newer = -1
        slots[slot]!.older = -1
    }

    @usableFromInline
    mutating func link(atHead slot: Int) {
        slots[slot]!.newer = -1
        slots[slot]!.older = head
        if head >= 0 { slots[head]!.newer = slot }
        head = slot
        if tail < 0 { tail = slot }
    }

    private mutating func insertAtHead(_ key: Key, _ value: Value) {
        let entry = Slot(key: key, value: value, newer: -1, older: -1)
        let slot: Int
        if let reused = free.popLast() {
            slot = reused
            slots[slot] = entry
        } else {
            slot = slots.count
            slots.append(entry)
        }
        index[key] = slot
        link(atHead: slot)
    }

    private mutating func removeSlot(_ slot: Int) -> (key: Key, value: Value) {
        unlink(slot)
        let entry = slots[slot]!
        slots[slot] = nil
        free.append(slot)
        index[entry.key] = nil
        return (entry.key, entry.value)
    }
}

extension LRUCache: Sendable where Key: Sendable, Value: Sendable {}
extension LRUCache.Slot: Sendable where Key: Sendable, Value: Sendable {}
