// Success and failure counts over a sliding window of time, for the windowed success-rate
// policy of failure accrual. The window is cut into a fixed number of buckets, so recording an
// outcome is O(1) and the memory is fixed, whatever the request rate: the first version kept
// every outcome of the window in an array and filtered it on every request.

/// Counts over the last `length` nanoseconds, to within one bucket (`length / bucketCount`).
public struct OutcomeWindow: Sendable {
    public static let bucketCount = 20

    public let length: UInt64
    private let bucketWidth: UInt64
    /// Per slot: the bucket number it holds (`time / bucketWidth`), and its counts.
    private var buckets: [(number: UInt64, successes: Int, failures: Int)]

    public init(length: UInt64) {
        self.length = length
        self.bucketWidth = max(1, length / UInt64(Self.bucketCount))
        self.buckets = Array(repeating: (UInt64.max, 0, 0), count: Self.bucketCount)
    }

    public mutating func record(success: Bool, now: UInt64) {
        let number = now / bucketWidth
        let slot = Int(number % UInt64(Self.bucketCount))
        if buckets[slot].number != number { buckets[slot] = (number, 0, 0) }
        if success { buckets[slot].successes += 1 } else { buckets[slot].failures += 1 }
    }

    /// Outcomes within the window at `now`.
    public func counts(now: UInt64) -> (successes: Int, total: Int) {
        let current = now / bucketWidth
        var successes = 0
        var total = 0
        for bucket in buckets where bucket.number <= current && current - bucket.number < UInt64(Self.bucketCount) {
            successes += bucket.successes
            total += bucket.successes + bucket.failures
        }
        return (successes, total)
    }

    public mutating func reset() {
        for index in buckets.indices { buckets[index] = (UInt64.max, 0, 0) }
    }
}
