// The metric registry and the names of every series meshd exports. Names follow Prometheus
// conventions (`_total` counters, `_seconds` histograms with `_bucket` series) and carry the
// router, client (bound name) and endpoint as labels. Hot-path handles (counters, histograms)
// are created once per router, client and endpoint and kept by their owners; a request only
// touches atomics and one short histogram lock per level.
//
// Each group of handles below (a client's, a service's, an endpoint's …) takes its place in the
// `SeriesBook` when made and gives it back in its deinit, so series go when their owner goes,
// and a scope never has more than `seriesLimit` owners (SeriesBook.swift).

import MeshCore
import Prometheus
import Synchronization

public final class MeshMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    public let book: SeriesBook
    public let tls: TLSMetrics

    /// Owners per scope, by default (`admin.metricSeriesLimit`).
    public static let defaultSeriesLimit = 1000

    /// Latency buckets, 0.5 ms to 30 s.
    static let latencyBuckets: [Duration] = [
        .microseconds(500), .milliseconds(1), .microseconds(2500), .milliseconds(5), .milliseconds(10),
        .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
        .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10), .seconds(30),
    ]

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry(), seriesLimit: Int = MeshMetrics.defaultSeriesLimit) {
        self.registry = registry
        self.book = SeriesBook(registry: registry, limit: seriesLimit)
        self.tls = TLSMetrics(registry: registry)
    }

    public func router(_ router: String) -> RequestMetrics {
        RequestMetrics(book: book, registry: registry, scope: "router", fixed: [("router", router)], owner: [])
    }

    public func client(router: String, client: String) -> RequestMetrics {
        RequestMetrics(book: book, registry: registry, scope: "client", fixed: [("router", router)], owner: [("client", client)])
    }

    public func endpoint(router: String, client: String, endpoint: String) -> RequestMetrics {
        RequestMetrics(book: book, registry: registry, scope: "endpoint", fixed: [("router", router)], owner: [("client", client), ("endpoint", endpoint)])
    }

    public func server(router: String, server: String) -> ServerMetrics {
        ServerMetrics(registry: registry, labels: [("router", router), ("server", server)])
    }

    public func pool(router: String, client: String, endpoint: String) -> PoolMetrics {
        PoolMetrics(book: book, registry: registry, fixed: [("router", router)], owner: [("client", client), ("endpoint", endpoint)])
    }

    /// A proxy-made error response (the `l5d-err` responses), by router and reason.
    public func proxyError(router: String, reason: String) -> Counter {
        registry.makeCounter(descriptor: .init(metricName: "meshd_router_errors_total", unitName: "", helpText: "Responses meshd made itself (with l5d-err), by reason."), labels: [("router", router), ("reason", reason)])
    }

    public func endpointHealth(router: String, client: String, endpoint: String) -> EndpointHealthMetrics {
        EndpointHealthMetrics(book: book, registry: registry, fixed: [("router", router)], owner: [("client", client), ("endpoint", endpoint)])
    }

    public func service(router: String, service: String) -> ServiceMetrics {
        ServiceMetrics(book: book, registry: registry, fixed: [("router", router)], owner: [("service", service)])
    }

    public func clientEndpoints(router: String, client: String) -> ClientEndpointMetrics {
        ClientEndpointMetrics(book: book, registry: registry, fixed: [("router", router)], owner: [("client", client)])
    }

    public var discovery: DiscoveryMetrics { DiscoveryMetrics(registry: registry) }

    public func cacheEvictions(router: String) -> CacheEvictionMetrics {
        CacheEvictionMetrics(registry: registry, router: router)
    }

    /// The Prometheus text exposition, with `prefix` prepended to every metric name.
    public func prometheusText(prefix: String = "") -> String {
        let text = registry.emitToString()
        guard !prefix.isEmpty else { return text }
        var out = ""
        out.reserveCapacity(text.utf8.count + 64)
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("# TYPE ") || line.hasPrefix("# HELP ") {
                out += line.prefix(7) + prefix + line.dropFirst(7)
            } else if !line.isEmpty && !line.hasPrefix("#") {
                out += prefix + line
            } else {
                out += line
            }
            out += "\n"
        }
        return String(out.dropLast())
    }

    /// Every sample as `name{labels}` → value, in exposition order (for `/admin/metrics.json`).
    public func samples() -> [(String, Double)] {
        var out: [(String, Double)] = []
        for line in registry.emitToString().split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
            out.append((String(line[..<space]), value))
        }
        return out
    }
}

/// Requests, responses by status class and latency, at one level (router, client or endpoint).
public final class RequestMetrics: Sendable {
    public let requests: Counter
    @usableFromInline let responses: [Counter]
    public let duration: DurationHistogram
    private let owned: OwnedSeries

    init(book: SeriesBook, registry: PrometheusCollectorRegistry, scope: String, fixed: [(String, String)], owner: [(String, String)]) {
        var made: (Counter, [Counter], DurationHistogram)?
        owned = OwnedSeries(book: book, registry: registry, group: "requests", scope: scope, fixed: fixed, owner: owner) { series in
            made = (
                series.counter("meshd_\(scope)_requests_total", "Requests received, per \(scope)."),
                ["1xx", "2xx", "3xx", "4xx", "5xx"].map {
                    series.counter("meshd_\(scope)_responses_total", "Responses sent, per \(scope) and status class.", extra: [("class", $0)])
                },
                series.histogram("meshd_\(scope)_request_duration_seconds", "Time from request to complete response, per \(scope).", buckets: MeshMetrics.latencyBuckets)
            )
        }
        (requests, responses, duration) = made!
    }

    /// A response with `status` was sent after `nanoseconds`.
    @inlinable
    public func responded(status: Int, nanoseconds: Int64) {
        let index = min(max(status / 100, 1), 5) - 1
        responses[index].increment()
        duration.recordNanoseconds(nanoseconds)
    }
}

/// What happens to the requests of one logical name beyond their first attempt.
public final class ServiceMetrics: Sendable {
    /// Requests whose final response the service's classifier called a success, and the rest.
    public let successes: Counter
    public let failures: Counter
    public let retries: Counter
    public let requeues: Counter
    public let budgetExhausted: Counter
    /// Retryable failures not retried because the request had had `maxRetries` retries.
    public let retriesLimited: Counter
    /// The kinds of `meshd_service_timeouts_total`.
    public enum TimeoutKind: String, CaseIterable, Sendable {
        case total, attempt, deadline, connect
    }

    private let timeouts: [TimeoutKind: Counter]
    private let owned: OwnedSeries

    init(book: SeriesBook, registry: PrometheusCollectorRegistry, fixed: [(String, String)], owner: [(String, String)]) {
        var made: [Counter] = []
        var timeouts: [TimeoutKind: Counter] = [:]
        owned = OwnedSeries(book: book, registry: registry, group: "service", scope: "service", fixed: fixed, owner: owner) { series in
            let outcomes = "Requests per logical name by the response class of their final answer."
            made = [
                series.counter("meshd_service_responses_total", outcomes, extra: [("outcome", "success")]),
                series.counter("meshd_service_responses_total", outcomes, extra: [("outcome", "failure")]),
                series.counter("meshd_service_retries_total", "Requests sent again after a retryable failure, per logical name."),
                series.counter("meshd_service_requeues_total", "Requests moved to another endpoint after a connection failure, per logical name."),
                series.counter("meshd_service_retry_budget_exhausted_total", "Retries and requeues refused because the budget was empty."),
                series.counter("meshd_service_retries_limited_total", "Retryable failures not retried because the request had used its maxRetries."),
            ]
            for kind in TimeoutKind.allCases {
                timeouts[kind] = series.counter("meshd_service_timeouts_total", "Timeouts per logical name, by kind (total, attempt, deadline, connect).", extra: [("kind", kind.rawValue)])
            }
        }
        (successes, failures, retries, requeues, budgetExhausted, retriesLimited) = (made[0], made[1], made[2], made[3], made[4], made[5])
        self.timeouts = timeouts
    }

    public func timedOut(_ kind: TimeoutKind) {
        timeouts[kind]?.increment()
    }
}

/// Failure accrual and load of one endpoint.
public final class EndpointHealthMetrics: Sendable {
    public let ejections: Counter
    public let revivals: Counter
    public let load: Gauge
    private let owned: OwnedSeries

    init(book: SeriesBook, registry: PrometheusCollectorRegistry, fixed: [(String, String)], owner: [(String, String)]) {
        var made: (Counter, Counter, Gauge)?
        owned = OwnedSeries(book: book, registry: registry, group: "endpoint_health", scope: "endpoint", fixed: fixed, owner: owner) { series in
            made = (
                series.counter("meshd_endpoint_ejections_total", "Times failure accrual ejected an endpoint (including failed probes)."),
                series.counter("meshd_endpoint_revivals_total", "Times an ejected endpoint's probe succeeded."),
                series.gauge("meshd_endpoint_load", "Requests in flight to an endpoint.")
            )
        }
        (ejections, revivals, load) = made!
    }
}

/// How many endpoints a client knows, and how many of them failure accrual lets take traffic.
public final class ClientEndpointMetrics: Sendable {
    public let endpoints: Gauge
    public let available: Gauge
    private let owned: OwnedSeries

    init(book: SeriesBook, registry: PrometheusCollectorRegistry, fixed: [(String, String)], owner: [(String, String)]) {
        var made: (Gauge, Gauge)?
        owned = OwnedSeries(book: book, registry: registry, group: "client_endpoints", scope: "client", fixed: fixed, owner: owner) { series in
            made = (
                series.gauge("meshd_client_endpoints", "Endpoints known for a client (bound name)."),
                series.gauge("meshd_client_endpoints_available", "Endpoints of a client that failure accrual has not ejected.")
            )
        }
        (endpoints, available) = made!
    }
}

/// Entries a router's caches let go of to stay within their bounds (`bindingCache`).
public struct CacheEvictionMetrics: Sendable {
    public let bindings: Counter
    public let clients: Counter
    public let services: Counter
    public let fastRoutes: Counter

    init(registry: PrometheusCollectorRegistry, router: String) {
        func counter(_ cache: String) -> Counter {
            registry.makeCounter(
                descriptor: .init(metricName: "meshd_router_cache_evictions_total", unitName: "", helpText: "Entries a router's caches evicted to stay within bindingCache, by cache."),
                labels: [("router", router), ("cache", cache)]
            )
        }
        bindings = counter("bindings")
        clients = counter("clients")
        services = counter("services")
        fastRoutes = counter("fast_routes")
    }
}

/// Connections of one listener.
public final class ServerMetrics: Sendable {
    public let connectionsOpen: Gauge
    public let connections: Counter
    /// Connections closed because their request head did not arrive within requestHeadTimeoutMs.
    public let headTimeouts: Counter
    /// Times the listener stopped accepting because maxConnections were open.
    public let acceptPauses: Counter

    init(registry: PrometheusCollectorRegistry, labels: [(String, String)]) {
        connectionsOpen = registry.makeGauge(descriptor: .init(metricName: "meshd_server_connections_open", unitName: "", helpText: "Connections open on a listener."), labels: labels)
        connections = registry.makeCounter(descriptor: .init(metricName: "meshd_server_connections_total", unitName: "", helpText: "Connections accepted by a listener."), labels: labels)
        headTimeouts = registry.makeCounter(descriptor: .init(metricName: "meshd_server_request_head_timeouts_total", unitName: "", helpText: "Client connections closed because a request head did not arrive within requestHeadTimeoutMs."), labels: labels)
        acceptPauses = registry.makeCounter(descriptor: .init(metricName: "meshd_server_accept_pauses_total", unitName: "", helpText: "Times a listener stopped accepting because maxConnections were open."), labels: labels)
    }
}

/// The connection pool to one endpoint.
public final class PoolMetrics: Sendable {
    public let open: Gauge
    public let idle: Gauge
    public let waiters: Gauge
    public let connects: Counter
    public let connectFailures: Counter
    public let rejected: Counter
    private let owned: OwnedSeries

    init(book: SeriesBook, registry: PrometheusCollectorRegistry, fixed: [(String, String)], owner: [(String, String)]) {
        var gauges: [Gauge] = []
        var counters: [Counter] = []
        owned = OwnedSeries(book: book, registry: registry, group: "pool", scope: "endpoint", fixed: fixed, owner: owner) { series in
            gauges = [
                series.gauge("meshd_pool_connections", "Connections open or opening to an endpoint."),
                series.gauge("meshd_pool_idle_connections", "Idle pooled connections to an endpoint."),
                series.gauge("meshd_pool_waiters", "Requests waiting for a connection to an endpoint."),
            ]
            counters = [
                series.counter("meshd_pool_connects_total", "Connections opened to an endpoint."),
                series.counter("meshd_pool_connect_failures_total", "Connection attempts to an endpoint that failed."),
                series.counter("meshd_pool_rejected_total", "Requests rejected because the pool and its queue were full."),
            ]
        }
        (open, idle, waiters) = (gauges[0], gauges[1], gauges[2])
        (connects, connectFailures, rejected) = (counters[0], counters[1], counters[2])
    }

    public func update(open: Int, idle: Int, waiters: Int) {
        self.open.set(Int64(open))
        self.idle.set(Int64(idle))
        self.waiters.set(Int64(waiters))
    }
}

/// What discovery backends report.
public struct DiscoveryMetrics: Sendable {
    let registry: PrometheusCollectorRegistry

    public init(registry: PrometheusCollectorRegistry) { self.registry = registry }

    /// Answers published for a name.
    public func updates(namer: String, name: String) -> Counter {
        registry.makeCounter(descriptor: .init(metricName: "meshd_discovery_updates_total", unitName: "", helpText: "Endpoint sets published by discovery, per name."), labels: [("namer", namer), ("name", name)])
    }

    /// Problems, by kind (`bad_line`, `directory_unreadable`, …).
    public func errors(namer: String, name: String, kind: String) -> Counter {
        registry.makeCounter(descriptor: .init(metricName: "meshd_discovery_errors_total", unitName: "", helpText: "Discovery problems, by kind."), labels: [("namer", namer), ("name", name), ("kind", kind)])
    }

    /// Endpoints currently known for a name.
    public func endpoints(namer: String, name: String) -> Gauge {
        registry.makeGauge(descriptor: .init(metricName: "meshd_discovery_endpoints", unitName: "", helpText: "Endpoints discovery currently knows for a name."), labels: [("namer", namer), ("name", name)])
    }
}

/// The metric handle types, so that modules above need not import the Prometheus client.
public typealias MetricCounter = Counter
public typealias MetricGauge = Gauge

/// TLS: handshakes by side and outcome, reloads of certificate files, and when each loaded
/// certificate expires. Labels come from the config (router, listener address or client
/// name, file path) and from a fixed set of outcomes, never from what a peer sends.
public final class TLSMetrics: Sendable {
    private let registry: PrometheusCollectorRegistry

    public init(registry: PrometheusCollectorRegistry) {
        self.registry = registry
    }

    /// `side`: `server` (a listener's handshakes with clients) or `client` (with endpoints);
    /// `result`: `success` or one of `TLSFailureKind`'s names.
    public func handshakes(router: String, side: String, result: String) -> Counter {
        registry.makeCounter(
            descriptor: .init(metricName: "meshd_tls_handshakes_total", unitName: "", helpText: "TLS handshakes, by side (server: with clients; client: with endpoints) and result."),
            labels: [("router", router), ("side", side), ("result", result)]
        )
    }

    public func reloads(result: String) -> Counter {
        registry.makeCounter(
            descriptor: .init(metricName: "meshd_tls_reloads_total", unitName: "", helpText: "Changed certificate or key files read again: applied (success) or rejected, keeping the old ones (failure)."),
            labels: [("result", result)]
        )
    }

    public func remove(_ gauge: Gauge) {
        registry.unregisterGauge(gauge)
    }

    /// Distinct caller identities that get a series of their own in `accessDenied`; the rest
    /// share `identity="other"`.
    public static let deniedIdentityLimit = 100
    private let deniedIdentities = Mutex<Set<String>>([])

    /// Requests an mTLS listener's `allow` rules refused, by the caller's identity (its first
    /// URI SAN, DNS SAN or CN; at most `deniedIdentityLimit` of them, then `other`).
    public func accessDenied(router: String, identity: String) -> Counter {
        let label = deniedIdentities.withLock { seen -> String in
            if seen.contains(identity) { return identity }
            guard seen.count < Self.deniedIdentityLimit else { return "other" }
            seen.insert(identity)
            return identity
        }
        return registry.makeCounter(
            descriptor: .init(metricName: "meshd_tls_access_denied_total", unitName: "", helpText: "Requests refused (403) because the caller's certificate identity may not call the name, by router and identity."),
            labels: [("router", router), ("identity", label)]
        )
    }

    public func expiry(router: String, side: String, path: String, subject: String) -> Gauge {
        registry.makeGauge(
            descriptor: .init(metricName: "meshd_tls_certificate_expiry_timestamp_seconds", unitName: "", helpText: "When a loaded certificate expires (its notAfter), in seconds since the Unix epoch."),
            labels: [("router", router), ("side", side), ("path", path), ("subject", subject)]
        )
    }
}
