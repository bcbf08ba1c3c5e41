// One request as it ended — emitted exactly once for every request head meshd read, whether an
// upstream answered it, meshd answered it itself, or the client went away first. It is the one
// feed for what is recorded about requests: the router, client, endpoint and service metrics
// and the `io.l5d.recentRequests` sample now; access logs, tracing and tap are to read the same
// record. Attempts are reported as they start and end (`AttemptRecord`), to the balancer
// (`BoundClient.finished`) and to the router's observers.

import MeshCore
import MeshTelemetry
import NIOCore
import NIOHTTP1

package struct RequestRecord {
    package let router: Router
    /// The request as the client sent it; nil when its head could not be read.
    package let request: HTTPRequestHead?
    /// Uptime nanoseconds.
    package let startedAt: UInt64
    package let endedAt: UInt64
    /// The status the client got; 0 when it got no response (it went away first).
    package let status: Int
    /// meshd's own answer, when it made one.
    package let error: ProxyError?
    /// Attempts, retries, requeues, bytes and the response class, for an exchange; nil for a
    /// request refused before routing.
    package let summary: ExchangeSummary?
    let client: BoundClient?
    let service: ServiceState?
    /// The last attempt's endpoint.
    let entry: BoundClient.Entry?
    package let endpoint: Endpoint?

    package init(
        router: Router, request: HTTPRequestHead?, startedAt: UInt64, endedAt: UInt64, status: Int, error: ProxyError?,
        summary: ExchangeSummary? = nil, client: BoundClient? = nil, service: ServiceState? = nil, entry: BoundClient.Entry? = nil, endpoint: Endpoint? = nil
    ) {
        self.router = router
        self.request = request
        self.startedAt = startedAt
        self.endedAt = endedAt
        self.status = status
        self.error = error
        self.summary = summary
        self.client = client
        self.service = service
        self.entry = entry
        self.endpoint = endpoint
    }

    package var latency: Int64 { Int64(endedAt &- min(endedAt, startedAt)) }

    /// Whether the service's classifier called the final answer a success.
    var succeeded: Bool { summary?.endpointSucceeded == true }
}

/// One attempt of an exchange: when it sends its request (`ended` nil) and when it ends.
package struct AttemptRecord: Sendable {
    package var router: String
    /// The bound name's client, `/#/io.l5d.fs/web`.
    package var client: Path
    package var endpoint: Endpoint
    /// 1 for the first attempt, then one more for each retry, requeue or stale resend.
    package var number: Int
    /// Whether it went on a pooled connection that had carried exchanges before.
    package var reusedConnection: Bool
    /// Uptime nanoseconds.
    package var startedAt: UInt64
    package var ended: Ended?

    package struct Ended: Sendable {
        package var at: UInt64
        /// What the attempt says about its endpoint; nil when it says nothing (a local limit, a
        /// client that went away).
        package var success: Bool?
    }
}

/// Something that follows requests as they happen: access logs, tracing and tap will be these.
/// Called on the event loop of the request's client connection; must not block.
package protocol RequestObserver: Sendable {
    func attemptStarted(_ attempt: AttemptRecord)
    func attemptEnded(_ attempt: AttemptRecord)
    func requestCompleted(_ record: RequestRecord)
}

extension Router {
    /// Records a finished request: metrics at every level it reached, the recent sample, and
    /// the observers.
    package func requestCompleted(_ record: RequestRecord, random: inout SplitMix64) {
        for observer in observers { observer.requestCompleted(record) }
        if let error = record.error { countError(error) }
        guard record.status > 0 else { return }
        let latency = record.latency
        metrics.responded(status: record.status, nanoseconds: latency)
        if let service = record.service {
            if record.succeeded { service.metrics.successes.increment() } else { service.metrics.failures.increment() }
        }
        record.client?.metrics.responded(status: record.status, nanoseconds: latency)
        record.entry?.metrics.responded(status: record.status, nanoseconds: latency)
        if let recent = recentRequests, let request = record.request, recent.shouldSample(&random) {
            recent.record(RecentRequests.Entry(
                uptimeNanos: record.endedAt, router: label, method: request.method.rawValue, uri: request.uri,
                host: request.headers.first(name: "host") ?? "", status: record.status, durationNanos: latency,
                client: record.client?.id.description ?? "", endpoint: record.endpoint?.description ?? ""
            ))
        }
    }
}
