import MeshCore

/// `client.loadBalancer`: how a client spreads requests over its endpoints.
enum LoadBalancerSyntax {
    static let kinds = ["p2c", "ewma", "aperture", "heap", "roundRobin"]

    static func read(_ node: ConfigNode) -> BalancerKind? {
        guard let m = node.mapping else { return nil }
        defer { m.finish() }
        guard let kind = m.kind(supported: kinds, what: "load balancer", defaultKind: "p2c") else {
            m.accepted(m.keys)
            return nil
        }
        m.unsupported(["enableProbation"], "meshd drops endpoints as soon as discovery removes them; remove it")
        let maxEffort = kind == "heap" ? 5 : m.int("maxEffort", in: 1...100) ?? 5
        switch kind {
        case "ewma":
            let decay = m.int("decayTimeMs", in: 1...3_600_000) ?? 10_000
            return .ewma(maxEffort: maxEffort, decayNanos: UInt64(decay) * 1_000_000)
        case "aperture":
            let window = m.int("smoothWindowMs", in: 1...3_600_000) ?? 5_000
            let low = m.double("lowLoad", in: 0...1_000_000) ?? 0.5
            let high = m.double("highLoad", in: 0...1_000_000) ?? 2.0
            let minimum = m.int("minAperture", in: 1...10_000) ?? 1
            if low >= high { node.error("lowLoad (\(low)) must be below highLoad (\(high))") }
            return .aperture(maxEffort: maxEffort, smoothWindowNanos: UInt64(window) * 1_000_000, lowLoad: low, highLoad: high, minAperture: minimum)
        case "heap":
            return .heap
        case "roundRobin":
            return .roundRobin(maxEffort: maxEffort)
        default:
            return .p2c(maxEffort: maxEffort)
        }
    }

    static func json(_ kind: BalancerKind) -> JSONValue {
        switch kind {
        case .p2c(let effort):
            return .object([("kind", .string("p2c")), ("maxEffort", .int(effort))])
        case .ewma(let effort, let decay):
            return .object([("kind", .string("ewma")), ("maxEffort", .int(effort)), ("decayTimeMs", .int(Int(decay / 1_000_000)))])
        case .aperture(let effort, let window, let low, let high, let minimum):
            return .object([
                ("kind", .string("aperture")), ("maxEffort", .int(effort)), ("smoothWindowMs", .int(Int(window / 1_000_000))),
                ("lowLoad", .double(low)), ("highLoad", .double(high)), ("minAperture", .int(minimum)),
            ])
        case .heap:
            return .object([("kind", .string("heap"))])
        case .roundRobin(let effort):
            return .object([("kind", .string("roundRobin")), ("maxEffort", .int(effort))])
        }
    }
}

/// `client.failureAccrual`: when an endpoint counts as dead, and for how long.
public struct FailureAccrualConfig: Sendable, Hashable, JSONRepresentable {
    /// Default: 5 consecutive failures.
    public var policy = FailureAccrualPolicy.consecutiveFailures(5)
    /// Default: equal-jittered exponential backoff from 5 s to 300 s.
    public var backoff = Backoff.linkerdFailureAccrualDefault.kind

    public init() {}

    static let kinds = ["io.l5d.consecutiveFailures", "io.l5d.successRate", "io.l5d.successRateWindowed", "none"]

    static func read(_ node: ConfigNode) -> FailureAccrualConfig? {
        var config = FailureAccrualConfig()
        guard let m = node.mapping else { return nil }
        defer { m.finish() }
        guard let kind = m.kind(supported: kinds, what: "failure accrual") else {
            m.accepted(m.keys)
            return nil
        }
        switch kind {
        case "io.l5d.consecutiveFailures":
            config.policy = .consecutiveFailures(m.int("failures", in: 1...1_000_000) ?? 5)
        case "io.l5d.successRate":
            let rate = m.required("successRate", hint: "e.g. 0.9")?.double(in: 0...1) ?? 0.9
            let requests = m.required("requests", hint: "the number of requests the rate is averaged over, e.g. 20")?.int(in: 1...1_000_000) ?? 20
            config.policy = .successRate(rate: rate, requests: requests)
        case "io.l5d.successRateWindowed":
            let rate = m.required("successRate", hint: "e.g. 0.9")?.double(in: 0...1) ?? 0.9
            let window = m.required("window", hint: "the window in seconds, e.g. 30")?.int(in: 1...86_400) ?? 30
            config.policy = .successRateWindowed(rate: rate, window: UInt64(window) * 1_000_000_000, minimumRequests: 5)
        default:
            config.policy = .none
        }
        if let backoff = m.optional("backoff") { config.backoff = BackoffSyntax.read(backoff) ?? config.backoff }
        return config
    }

    public var json: JSONValue {
        var pairs: [(String, JSONValue)]
        switch policy {
        case .none: pairs = [("kind", .string("none"))]
        case .consecutiveFailures(let failures): pairs = [("kind", .string("io.l5d.consecutiveFailures")), ("failures", .int(failures))]
        case .successRate(let rate, let requests):
            pairs = [("kind", .string("io.l5d.successRate")), ("successRate", .double(rate)), ("requests", .int(requests))]
        case .successRateWindowed(let rate, let window, _):
            pairs = [("kind", .string("io.l5d.successRateWindowed")), ("successRate", .double(rate)), ("window", .int(Int(window / 1_000_000_000)))]
        }
        pairs.append(("backoff", BackoffSyntax.json(backoff)))
        return .object(pairs)
    }
}

/// `backoff: {kind: constant, ms}` or `{kind: jittered, minMs, maxMs}`.
enum BackoffSyntax {
    static func read(_ node: ConfigNode) -> Backoff.Kind? {
        guard let m = node.mapping else { return nil }
        defer { m.finish() }
        guard let kind = m.kind(supported: ["constant", "jittered"], what: "backoff") else {
            m.accepted(m.keys)
            return nil
        }
        if kind == "constant" {
            return .constant(nanoseconds: UInt64(m.int("ms", in: 0...86_400_000) ?? 0) * 1_000_000)
        }
        let minMs = m.required("minMs", hint: "e.g. 5000")?.int(in: 0...86_400_000)
        let maxMs = m.required("maxMs", hint: "e.g. 300000")?.int(in: 0...86_400_000)
        guard let minMs, let maxMs else { return nil }
        if minMs > maxMs { node.error("minMs (\(minMs)) is larger than maxMs (\(maxMs))") }
        return .decorrelatedJittered(min: UInt64(minMs) * 1_000_000, max: UInt64(maxMs) * 1_000_000)
    }

    static func json(_ kind: Backoff.Kind) -> JSONValue {
        switch kind {
        case .constant(let wait):
            return .object([("kind", .string("constant")), ("ms", .int(Int(wait / 1_000_000)))])
        case .equalJittered(let minimum, let maximum):
            return .object([("kind", .string("equalJittered")), ("minMs", .int(Int(minimum / 1_000_000))), ("maxMs", .int(Int(maximum / 1_000_000)))])
        case .decorrelatedJittered(let minimum, let maximum):
            return .object([("kind", .string("jittered")), ("minMs", .int(Int(minimum / 1_000_000))), ("maxMs", .int(Int(maximum / 1_000_000)))])
        }
    }
}
