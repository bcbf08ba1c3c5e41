// A retry budget (Finagle's RetryBudget, Linkerd's `retries.budget` and `requeueBudget`): retries
// may add `percentCanRetry` of the requests seen in the last `ttl`, plus a reserve of
// `minRetriesPerSec` a second, so that a failing upstream sees a bounded multiple of its normal
// traffic instead of a retry storm. Counts live in one-second buckets over the window; time comes
// in as an argument.

public struct RetryBudget: Sendable {
    public let ttlSeconds: Int
    public let minRetriesPerSecond: Int
    public let percentCanRetry: Double

    private var deposits: [Int]
    private var withdrawals: [Int]
    /// The second (since the clock's zero) that each bucket holds.
    private var bucketSecond: [UInt64]

    public init(ttlSeconds: Int = 10, minRetriesPerSecond: Int = 10, percentCanRetry: Double = 0.2) {
        precondition(ttlSeconds >= 1, "a retry budget needs a window of at least a second")
        self.ttlSeconds = ttlSeconds
        self.minRetriesPerSecond = minRetriesPerSecond
        self.percentCanRetry = percentCanRetry
        deposits = Array(repeating: 0, count: ttlSeconds)
        withdrawals = Array(repeating: 0, count: ttlSeconds)
        bucketSecond = Array(repeating: .max, count: ttlSeconds)
    }

    /// A request was made (retries excepted): it earns `percentCanRetry` of a retry.
    public mutating func deposit(now: UInt64) {
        let index = bucket(now)
        deposits[index] += 1
    }

    /// Takes one retry from the budget if there is one.
    public mutating func tryWithdraw(now: UInt64) -> Bool {
        guard balance(now: now) >= 1 else { return false }
        withdrawals[bucket(now)] += 1
        return true
    }

    /// Retries available at `now`.
    public func balance(now: UInt64) -> Int {
        let second = now / 1_000_000_000
        var requests = 0
        var retries = 0
        for index in 0..<ttlSeconds where bucketSecond[index] != .max && second &- bucketSecond[index] < UInt64(ttlSeconds) {
            requests += deposits[index]
            retries += withdrawals[index]
        }
        let earned = Int((Double(requests) * percentCanRetry).rounded(.down))
        return earned + minRetriesPerSecond * ttlSeconds - retries
    }

    /// The bucket for `now`, emptied if it last held an older second.
    private mutating func bucket(_ now: UInt64) -> Int {
        let second = now / 1_000_000_000
        let index = Int(second % UInt64(ttlSeconds))
        if bucketSecond[index] != second {
            bucketSecond[index] = second
            deposits[index] = 0
            withdrawals[index] = 0
        }
        return index
    }
}
