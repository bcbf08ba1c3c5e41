import MeshCore
import Testing

@Suite struct LRUCacheTests {
    @Test func evictsTheLeastRecentlyUsed() {
        var cache = LRUCache<String, Int>(capacity: 3)
        cache.set("a", 1)
        cache.set("b", 2)
        cache.set("c", 3)
        #expect(cache.get("a") == 1)  // a is now the newest
        let evicted = cache.set("d", 4)
        #expect(evicted?.key == "b")
        #expect(cache.count == 3)
        #expect(cache.values == [4, 1, 3])
        #expect(cache.peek("c") == 3)
        #expect(cache.set("e", 5)?.key == "c", "peek does not count as a use")
    }

    @Test func updatingAKeyMovesItWithoutEvicting() {
        var cache = LRUCache<Int, String>(capacity: 2)
        cache.set(1, "one")
        cache.set(2, "two")
        #expect(cache.set(1, "uno") == nil)
        #expect(cache.set(3, "three")?.key == 2)
        #expect(cache.get(1) == "uno")
    }

    @Test func overflowEvictsOnlyWhatMayGoOldestFirst() {
        var cache = LRUCache<Int, Int>(capacity: 2)
        for key in 0..<5 { cache.insert(key, key) }
        #expect(cache.count == 5)
        // 0 and 2 are busy; 1 and 3 go (oldest first), 4 stays as the limit is reached.
        let evicted = cache.evictOverflow { $0 % 2 == 1 }
        #expect(evicted.map(\.key) == [1, 3])
        #expect(cache.count == 3)
        #expect(cache.evictOverflow { _ in true }.map(\.key) == [0])
        #expect(cache.values == [4, 2])
    }

    @Test func removalsKeepTheListIntact() {
        var cache = LRUCache<Int, Int>(capacity: 100)
        for key in 0..<50 { cache.set(key, key * 10) }
        #expect(cache.remove(0) == 0)
        #expect(cache.remove(49) == 490)
        #expect(cache.remove(49) == nil)
        let removed = cache.removeAll { key, _ in key % 2 == 0 }
        #expect(removed.count == 24)
        #expect(cache.values == stride(from: 47, through: 1, by: -2).map { $0 * 10 })
        // Freed slots are reused; the order stays right.
        for key in 100..<130 { cache.set(key, key) }
        #expect(cache.count == 54)
        #expect(cache.values.first == 129)
        #expect(cache.values.last == 10)
    }

    /// A model check: the same random operations on the cache and on a plain list agree.
    @Test func agreesWithASimpleModel() {
        var random = SplitMix64(seed: 42)
        var cache = LRUCache<Int, Int>(capacity: 8)
        var model: [(key: Int, value: Int)] = []  // most recent first
        for step in 0..<20_000 {
            let key = Int(random.next() % 16)
            switch random.next() % 4 {
            case 0:
                let got = cache.get(key)
                let index = model.firstIndex { $0.key == key }
                #expect(got == index.map { model[$0].value })
                if let index { model.insert(model.remove(at: index), at: 0) }
            case 1:
                #expect(cache.remove(key) == model.firstIndex { $0.key == key }.map { model.remove(at: $0).value })
            default:
                let evicted = cache.set(key, step)
                if let index = model.firstIndex(where: { $0.key == key }) {
                    model.remove(at: index)
                    #expect(evicted == nil)
                } else if model.count >= 8 {
                    #expect(evicted?.key == model.removeLast().key)
                }
                model.insert((key, step), at: 0)
            }
            #expect(cache.values == model.map(\.value))
        }
    }

    @Test func evictsTheLeastRecentlyUsedOfTwo() {
        var cache = LRUCache<String, Int>(capacity: 2)
        cache.set("a", 1)
        cache.set("b", 2)
        #expect(cache.get("a") == 1)
        let evicted = cache.set("c", 3)
        #expect(evicted?.key == "b")
        #expect(cache.get("b") == nil && cache.get("a") == 1 && cache.get("c") == 3)
        #expect(cache.set("c", 4) == nil)
        #expect(cache.count == 2)
    }

    @Test func removesByPredicate() {
        var cache = LRUCache<Int, Int>(capacity: 10)
        for index in 0..<5 { cache.set(index, index * 10) }
        let removed = cache.removeAll { key, _ in key % 2 == 0 }
        #expect(Set(removed.map(\.key)) == [0, 2, 4])
        #expect(cache.count == 2)
    }
}
