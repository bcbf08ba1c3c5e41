// What requests to one logical name share: their policy (classifier, retries, timeouts), their
// retry budget, and their metrics.

import MeshConfig
import MeshCore
import MeshTelemetry
import NIOConcurrencyHelpers
import Synchronization

package final class ServiceState: Sendable {
    let params: ServiceParams
    let metrics: ServiceMetrics
    private let budget: NIOLockedValueBox<RetryBudget>
    /// Set when the router's service cache let this go; a remembered fast route to it is stale.
    private let evicted = Atomic<Bool>(false)

    var isEvicted: Bool { evicted.load(ordering: .relaxed) }

    func markEvicted() {
        evicted.store(true, ordering: .relaxed)
    }

    init(params: ServiceParams, metrics: ServiceMetrics) {
        self.params = params
        self.metrics = metrics
        let config = params.retries.budget
        self.budget = NIOLockedValueBox(RetryBudget(
            ttlSeconds: config.ttlSecs, minRetriesPerSecond: config.minRetriesPerSec, percentCanRetry: config.percentCanRetry
        ))
    }

    /// A request arrived: it earns its share of retries.
    func requestStarted(now: UInt64) {
        budget.withLockedValue { $0.deposit(now: now) }
    }

    /// Takes a retry from the budget; false (and counted) when it is empty.
    func tryRetry(now: UInt64) -> Bool {
        let granted = budget.withLockedValue { $0.tryWithdraw(now: now) }
        if granted { metrics.retries.increment() } else { metrics.budgetExhausted.increment() }
        return granted
    }
}
