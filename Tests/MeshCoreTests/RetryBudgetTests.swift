import MeshCore
import Testing

@Suite struct RetryBudgetTests {
    static let second: UInt64 = 1_000_000_000

    @Test func reserveAllowsMinRetriesPerSecondTimesTtl() {
        var budget = RetryBudget(ttlSeconds: 10, minRetriesPerSecond: 2, percentCanRetry: 0)
        var granted = 0
        for _ in 0..<100 where budget.tryWithdraw(now: 5 * Self.second) { granted += 1 }
        #expect(granted == 20)
    }

    @Test func depositsEarnAShareOfRetries() {
        var budget = RetryBudget(ttlSeconds: 10, minRetriesPerSecond: 0, percentCanRetry: 0.2)
        for _ in 0..<100 { budget.deposit(now: 0) }
        var granted = 0
        for _ in 0..<100 where budget.tryWithdraw(now: Self.second) { granted += 1 }
        #expect(granted == 20)
    }

    @Test func oldDepositsAndWithdrawalsLeaveTheWindow() {
        var budget = RetryBudget(ttlSeconds: 2, minRetriesPerSecond: 0, percentCanRetry: 1)
        for _ in 0..<10 { budget.deposit(now: 0) }
        #expect(budget.balance(now: Self.second) == 10)
        #expect(budget.balance(now: 2 * Self.second + 1) == 0, "deposits older than the ttl no longer count")
        for _ in 0..<3 { budget.deposit(now: 3 * Self.second) }
        let withdrew = budget.tryWithdraw(now: 3 * Self.second)
        #expect(withdrew)
        #expect(budget.balance(now: 3 * Self.second) == 2)
    }

    @Test func boundUnderSustainedFailure() {
        // 50 % failing upstream, every failure wants a retry: attempts stay within
        // requests × (1 + percent) + minPerSec × (seconds + ttl).
        var budget = RetryBudget(ttlSeconds: 10, minRetriesPerSecond: 10, percentCanRetry: 0.2)
        var random = SplitMix64(seed: 9)
        var attempts = 0
        let requests = 6000
        for index in 0..<requests {
            let now = UInt64(index) * (Self.second / 200)  // 200 requests a second for 30 s
            budget.deposit(now: now)
            attempts += 1
            while Bool.random(using: &random), budget.tryWithdraw(now: now) { attempts += 1 }
        }
        #expect(Double(attempts) <= Double(requests) * 1.2 + 10 * (30 + 10))
    }
}

@Suite struct DeadlineTests {
    @Test func readsTheStrictest() throws {
        let parsed = try Deadline.read(["1 900", "2 500", "3 700"]).get()
        #expect(parsed == Deadline(timestamp: 2, deadline: 500))
        #expect(try Deadline.read([]).get() == nil)
    }

    @Test func rejectsMalformedValues() {
        guard case .failure = Deadline.read(["soon"]) else { Issue.record("expected an error"); return }
        guard case .failure = Deadline.read(["1 2 3"]) else { Issue.record("expected an error"); return }
    }

    @Test func tightensAndWrites() {
        let deadline = Deadline(timestamp: 10, deadline: 1000).tightened(to: 400)
        #expect(deadline.deadline == 400)
        #expect(deadline.headerValue(now: 50) == "50 400")
    }
}
