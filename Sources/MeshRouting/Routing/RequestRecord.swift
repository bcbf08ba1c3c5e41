// One request as it ended — emitted exactly once for every request head meshd read, whether an
// upstream answered it, meshd answered it itself, or the client went away first. It is the one
// feed for what is recorded about requests: the router, client, endpoint and service metrics
// and the `io.l5d.recentRequests` sample now; access logs, tracing and tap are to read the same
// record. Attempts are reported as they end, to the balancer (`BoundClient.finished`).

import MeshCore
import MeshTelemetry
import NIOCore
import NIOHTTP1

package struct RequestRecord {
    let router: Router
    /// The request as the client sent it; nil when its head could not be read.
    let request: HTTPRequestHead?
    /// Uptime nanoseconds.
    let startedAt: UInt64
    let endedAt: UInt64
    /// The status the client got; 0 when it got no response (it went away first).
    let status: Int
    /// meshd's own answer, when it made one.
    let error: ProxyError?
    /// Attempts, retries, requeues, bytes and the response class, for an exchange; nil for a
    /// request refused before routing.
    let summary: ExchangeSummary?
    let client: BoundClient?
    let service: ServiceState?
    /// The last attempt's endpoint.
    let entry: BoundClient.Entry?
    let endpoint: Endpoint?

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

    var latency: Int64 { Int64(endedAt &- min(endedAt, startedAt)) }

    /// Whether the service's classifier called the final answer a success.
    var succeeded: Bool { summary?.endpointSucceeded == true }
}

extension Router {
    /// Records a finished request: metrics at every level it reached, and the recent sample.
    package func requestCompleted(_ record: RequestRecord, random: inout SplitMix64) {
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
