import MeshCore

/// `routers[].service`: policy per logical name (`/svc/…`): response classes, retries, total
/// timeout. `io.l5d.global` applies one set to every name; `io.l5d.static` gives parameters per
/// name prefix (`configs: [{prefix: /svc/web, …}]`), every matching entry applying in order.
public typealias ServiceConfig = PrefixConfigs<ServiceParams>

extension PrefixConfigs where Params == ServiceParams {
    static func read(_ node: ConfigNode?) -> ServiceConfig {
        read(node, what: "service", example: "{prefix: /svc/web, totalTimeoutMs: 1000}",
             prefixHint: "give the service names this entry applies to, e.g. /svc/web")
    }
}

/// Everything that can be set per logical name.
public struct ServiceParams: ConfigReadableParams {
    /// The whole request, retries included, in ms, 1–3,600,000. Default: none (nil).
    public var totalTimeoutMs: Int?
    public var retries = RetriesConfig()
    /// Default `io.l5d.http.nonRetryable5XX`.
    public var responseClassifier = ResponseClassifier.nonRetryable5XX
    /// Request bodies up to this size are kept so that the request can be retried, in bytes,
    /// 0–16 MiB. Default 65,536. Larger or still-streaming bodies are never replayed.
    public var retryBufferBytes = 65_536

    public init() {}

    static func readOverrides(_ m: ConfigMapping) -> ServiceOverrides { ServiceOverrides.read(m) }

    public mutating func apply(_ overrides: ServiceOverrides) {
        if let value = overrides.totalTimeoutMs { totalTimeoutMs = value }
        if let value = overrides.retries { retries = value }
        if let value = overrides.responseClassifier { responseClassifier = value }
        if let value = overrides.retryBufferBytes { retryBufferBytes = value }
    }

    public var json: JSONValue {
        .object([
            ("totalTimeoutMs", totalTimeoutMs.map { .int($0) } ?? .null),
            ("retries", retries.json),
            ("responseClassifier", .object([("kind", .string(responseClassifier.rawValue))])),
            ("retryBufferSize", .object([("requestBytes", .int(retryBufferBytes))])),
        ])
    }
}

/// The keys one service entry sets.
public struct ServiceOverrides: Sendable, Hashable, JSONRepresentable {
    public var totalTimeoutMs: Int?
    public var retries: RetriesConfig?
    public var responseClassifier: ResponseClassifier?
    public var retryBufferBytes: Int?

    static let linkerdClassifiers = [
        "io.l5d.h2.nonRetryable5XX", "io.l5d.h2.retryableRead5XX", "io.l5d.h2.retryableIdempotent5XX", "io.l5d.h2.allSuccessful",
        "io.l5d.h2.grpc.default", "io.l5d.h2.grpc.alwaysRetryable", "io.l5d.h2.grpc.neverRetryable", "io.l5d.h2.grpc.retryableStatusCodes",
    ]

    static func read(_ m: ConfigMapping) -> ServiceOverrides {
        var overrides = ServiceOverrides()
        overrides.totalTimeoutMs = m.int("totalTimeoutMs", in: 1...3_600_000)
        if let retries = m.optional("retries") { overrides.retries = RetriesConfig.read(retries) }
        if let classifier = m.optional("responseClassifier"), let cm = classifier.mapping {
            let supported = ResponseClassifier.allCases.map(\.rawValue)
            // Pre-1.0 Linkerd names without the `http.` segment mean the same classifiers.
            let legacy = ["io.l5d.nonRetryable5XX", "io.l5d.retryableRead5XX", "io.l5d.retryableIdempotent5XX"]
            if let kind = cm.kind(supported: supported + legacy, linkerdOnly: linkerdClassifiers, what: "response classifier") {
                overrides.responseClassifier = ResponseClassifier(rawValue: kind) ?? ResponseClassifier(rawValue: kind.replacingOccurrences(of: "io.l5d.", with: "io.l5d.http."))
            } else {
                cm.accepted(cm.keys)
            }
            cm.finish()
        }
        if let buffer = m.optional("retryBufferSize"), let bm = buffer.mapping {
            overrides.retryBufferBytes = bm.int("requestBytes", in: 0...16 * 1024 * 1024)
            bm.accepted(["responseBytes"])
            bm.finish()
        }
        return overrides
    }

    public var json: JSONValue {
        var pairs: [(String, JSONValue)] = []
        if let totalTimeoutMs { pairs.append(("totalTimeoutMs", .int(totalTimeoutMs))) }
        if let retries { pairs.append(("retries", retries.json)) }
        if let responseClassifier { pairs.append(("responseClassifier", .object([("kind", .string(responseClassifier.rawValue))]))) }
        if let retryBufferBytes { pairs.append(("retryBufferSize", .object([("requestBytes", .int(retryBufferBytes))]))) }
        return .object(pairs)
    }
}

/// `service.retries`: the retry budget and the backoff between retries.
public struct RetriesConfig: Sendable, Hashable, JSONRepresentable {
    public var budget = RetryBudgetConfig()
    /// Default: constant 0 ms.
    public var backoff = Backoff.Kind.constant(nanoseconds: 0)
    /// Retries of one request at most, whatever the budget holds, 0–100. Default 5. A meshd
    /// extension: without it, one request could spend a quiet service's whole budget at once.
    public var maxRetries = 5

    public init() {}

    static func read(_ node: ConfigNode) -> RetriesConfig {
        var config = RetriesConfig()
        guard let m = node.mapping else { return config }
        defer { m.finish() }
        if let budget = m.optional("budget") { config.budget = RetryBudgetConfig.read(budget) }
        if let backoff = m.optional("backoff") { config.backoff = BackoffSyntax.read(backoff) ?? config.backoff }
        config.maxRetries = m.int("maxRetries", in: 0...100) ?? config.maxRetries
        return config
    }

    public var json: JSONValue {
        .object([("budget", budget.json), ("backoff", BackoffSyntax.json(backoff)), ("maxRetries", .int(maxRetries))])
    }
}

/// A retry budget: retries may add `percentCanRetry` of the requests of the last `ttlSecs`,
/// plus `minRetriesPerSec` a second whatever the traffic.
public struct RetryBudgetConfig: Sendable, Hashable, JSONRepresentable {
    /// 1–60. Default 10.
    public var ttlSecs = 10
    /// 0–1,000,000. Default 10.
    public var minRetriesPerSec = 10
    /// 0–1000. Default 0.2.
    public var percentCanRetry = 0.2

    public init() {}

    static func read(_ node: ConfigNode) -> RetryBudgetConfig {
        var config = RetryBudgetConfig()
        guard let m = node.mapping else { return config }
        defer { m.finish() }
        config.ttlSecs = m.int("ttlSecs", in: 1...60) ?? config.ttlSecs
        config.minRetriesPerSec = m.int("minRetriesPerSec", in: 0...1_000_000) ?? config.minRetriesPerSec
        config.percentCanRetry = m.double("percentCanRetry", in: 0...1000) ?? config.percentCanRetry
        return config
    }

    public var json: JSONValue {
        .object([("ttlSecs", .int(ttlSecs)), ("minRetriesPerSec", .int(minRetriesPerSec)), ("percentCanRetry", .double(percentCanRetry))])
    }
}
