import MeshCore

/// `telemetry[]`: metric and trace exporters.
public enum TelemeterConfig: Sendable, Hashable, JSONRepresentable {
    case prometheus(PrometheusConfig)
    /// Keep a sample of recent requests for the admin port's `/requests`: a `sampleRate` share
    /// (0–1, required) of requests, the last `capacity` of them (1–10,000, default 10).
    case recentRequests(sampleRate: Double, capacity: Int)

    static let supportedKinds = ["io.l5d.prometheus", "io.l5d.recentRequests"]
    static let linkerdKinds = [
        "io.l5d.influxdb", "io.l5d.statsd", "io.l5d.tracelog", "io.l5d.zipkin",
        "io.l5d.newrelic", "io.l5d.istio", "io.l5d.adminMetricsExport", "io.l5d.commonMetrics",
    ]

    static func read(_ node: ConfigNode) -> TelemeterConfig? {
        guard let m = node.mapping else { return nil }
        defer { m.finish() }
        guard let kind = m.kind(supported: supportedKinds, linkerdOnly: linkerdKinds, what: "telemeter") else {
            m.accepted(m.keys)
            return nil
        }
        m.accepted(["experimental"])
        switch kind {
        case "io.l5d.recentRequests":
            let rate = m.required("sampleRate", hint: "the share of requests to keep, e.g. 0.25")?.double(in: 0...1) ?? 0
            return .recentRequests(sampleRate: rate, capacity: m.int("capacity", in: 1...10_000) ?? 10)
        default:
            var config = PrometheusConfig()
            if let node = m.optional("path"), let path = node.string {
                if !path.hasPrefix("/") {
                    node.error("path must start with '/'")
                } else if PrometheusConfig.reservedPaths.contains(path) || path.hasPrefix("/namer_state/") {
                    node.error("path '\(path)' is one of the admin port's own paths; choose another, e.g. /metrics")
                } else {
                    config.path = path
                }
            }
            if let node = m.optional("prefix"), let prefix = node.string {
                if prefix.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == ":") }) {
                    config.prefix = prefix
                } else {
                    node.error("prefix may hold only letters, digits, '_' and ':' (Prometheus metric name characters)")
                }
            }
            return .prometheus(config)
        }
    }

    public var json: JSONValue {
        switch self {
        case .prometheus(let config):
            return .object([("kind", .string("io.l5d.prometheus")), ("path", .string(config.path)), ("prefix", .string(config.prefix))])
        case .recentRequests(let rate, let capacity):
            return .object([("kind", .string("io.l5d.recentRequests")), ("sampleRate", .double(rate)), ("capacity", .int(capacity))])
        }
    }
}

/// `io.l5d.prometheus`: Prometheus text exposition on the admin port.
public struct PrometheusConfig: Sendable, Hashable {
    /// Admin path that serves the metrics. Default `/admin/metrics/prometheus`.
    public var path = "/admin/metrics/prometheus"
    /// Prepended to every metric name. Default empty.
    public var prefix = ""

    public init() {}

    /// Admin paths a telemeter may not take over (the Prometheus path itself is allowed).
    static let reservedPaths: Set<String> = [
        "/admin/ping", "/admin/ready", "/config.json", "/admin/metrics.json", "/admin/listeners.json",
        "/client_state.json", "/admin/shutdown", "/admin", "/admin/", "/", "/requests", "/requests.json",
        "/delegator", "/delegator.json", "/bound-names.json",
    ]
}
