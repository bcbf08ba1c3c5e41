import MeshCore

/// `routers[].client`: how meshd talks to the endpoints of each bound name. `io.l5d.global`
/// applies one set of parameters to every client; `io.l5d.static` gives parameters per client
/// name prefix (`configs: [{prefix: /#/io.l5d.fs/web, …}]`), every matching entry applying in
/// order so that later ones win key by key.
public typealias ClientConfig = PrefixConfigs<ClientParams>

extension PrefixConfigs where Params == ClientParams {
    static func read(_ node: ConfigNode?) -> ClientConfig {
        let config = read(node, what: "client", example: "{prefix: /#/io.l5d.fs/web, loadBalancer: {kind: ewma}}",
                          prefixHint: "give the client names this entry applies to, e.g. /#/io.l5d.fs/*")
        // A `{name}` in a commonName must be captured by the entry's prefix.
        if let diagnostics = node?.diagnostics {
            if let tls = config.base.tls { checkCaptures(tls, available: [], diagnostics: diagnostics) }
            for entry in config.configs {
                if let tls = entry.overrides.tls { checkCaptures(tls, available: entry.prefix.captureNames, diagnostics: diagnostics) }
            }
        }
        return config
    }

    private static func checkCaptures(_ tls: ClientTLSConfig, available: [String], diagnostics: ConfigDiagnostics) {
        guard let name = tls.commonName else { return }
        for variable in NameTemplate.variables(in: name) where !available.contains(variable) {
            let hint = available.isEmpty
                ? "only an io.l5d.static entry whose prefix captures it (prefix: /#/io.l5d.fs/{\(variable)}) can use it"
                : "its prefix captures \(available.map { "{\($0)}" }.joined(separator: ", "))"
            diagnostics.report("commonName '\(name)' uses {\(variable)}, which is not captured; \(hint)",
                               line: tls.origin.line, column: tls.origin.column, path: tls.origin.keyPath + ".commonName")
        }
    }
}

/// Everything that can be set per client.
public struct ClientParams: ConfigReadableParams {
    public var hostConnectionPool = HostConnectionPoolConfig()
    public var loadBalancer = BalancerKind.p2c(maxEffort: 5)
    public var failureAccrual = FailureAccrualConfig()
    /// When every endpoint is ejected, answer 503 at once instead of trying the least bad one.
    /// Default false.
    public var failFast = false
    /// Each attempt (the first and every retry) must get its response head within this, in ms,
    /// 1–3,600,000. Default: none (nil).
    public var requestAttemptTimeoutMs: Int?
    /// Connection failures before a request was sent go to another endpoint under this budget.
    public var requeueBudget = RetryBudgetConfig()
    /// Upstream connections: closed after `idleTimeMs` unused and retired after `lifeTimeMs`.
    public var clientSession = SessionConfig()
    /// Opening a connection to an endpoint may take this long, in ms, 1–600,000. Default 1,000
    /// (Finagle's). A meshd extension.
    public var connectTimeoutMs = 1000
    /// TLS to the endpoints (docs/config/tls.md); `commonName` here has the prefix's captures
    /// filled in. Default: plain TCP (nil).
    public var tls: ClientTLSConfig?
    /// Send the client certificate of the request's TLS connection upstream in
    /// `x-forwarded-client-cert` (replacing any such header the client sent). Default false.
    public var forwardClientCert = false

    public init() {}

    static func readOverrides(_ m: ConfigMapping) -> ClientOverrides { ClientOverrides.read(m) }

    public mutating func apply(_ overrides: ClientOverrides) {
        if let pool = overrides.hostConnectionPool { hostConnectionPool = pool }
        if let balancer = overrides.loadBalancer { loadBalancer = balancer }
        if let accrual = overrides.failureAccrual { failureAccrual = accrual }
        if let failFast = overrides.failFast { self.failFast = failFast }
        if let value = overrides.requestAttemptTimeoutMs { requestAttemptTimeoutMs = value }
        if let value = overrides.requeueBudget { requeueBudget = value }
        if let value = overrides.clientSession { clientSession = value }
        if let value = overrides.connectTimeoutMs { connectTimeoutMs = value }
        if let value = overrides.tls { tls = value }
        if let value = overrides.forwardClientCert { forwardClientCert = value }
    }

    public mutating func apply(_ overrides: ClientOverrides, captures: [String: String]) {
        apply(overrides)
        if overrides.tls != nil, let template = tls?.commonName {
            tls?.commonName = NameTemplate.expand(template, captures: captures) ?? template
        }
    }

    public var json: JSONValue {
        .object([
            ("hostConnectionPool", hostConnectionPool.json),
            ("loadBalancer", LoadBalancerSyntax.json(loadBalancer)),
            ("failureAccrual", failureAccrual.json),
            ("failFast", .bool(failFast)),
            ("requestAttemptTimeoutMs", requestAttemptTimeoutMs.map { .int($0) } ?? .null),
            ("requeueBudget", requeueBudget.json),
            ("clientSession", clientSession.json),
            ("connectTimeoutMs", .int(connectTimeoutMs)),
            ("tls", tls?.json ?? .null),
            ("forwardClientCert", .bool(forwardClientCert)),
        ])
    }
}

/// `clientSession` / `serverSession`: how long a connection may stay idle, and live at all.
public struct SessionConfig: Sendable, Hashable, JSONRepresentable {
    /// Closed after this long without a request, in ms, 1–2,147,483,647. Default: never (nil).
    public var idleTimeMs: Int?
    /// Closed (after the request in progress) once this old, in ms, 1–2,147,483,647. Default: never.
    public var lifeTimeMs: Int?

    public init(idleTimeMs: Int? = nil, lifeTimeMs: Int? = nil) {
        self.idleTimeMs = idleTimeMs
        self.lifeTimeMs = lifeTimeMs
    }

    static func read(_ node: ConfigNode) -> SessionConfig {
        var config = SessionConfig()
        guard let m = node.mapping else { return config }
        defer { m.finish() }
        config.idleTimeMs = m.int("idleTimeMs", in: 1...Int(Int32.max))
        config.lifeTimeMs = m.int("lifeTimeMs", in: 1...Int(Int32.max))
        return config
    }

    public var json: JSONValue {
        .object([("idleTimeMs", idleTimeMs.map { .int($0) } ?? .null), ("lifeTimeMs", lifeTimeMs.map { .int($0) } ?? .null)])
    }
}

/// The keys one client entry sets; unset keys leave earlier values.
public struct ClientOverrides: Sendable, Hashable, JSONRepresentable {
    public var hostConnectionPool: HostConnectionPoolConfig?
    public var loadBalancer: BalancerKind?
    public var failureAccrual: FailureAccrualConfig?
    public var failFast: Bool?
    public var requestAttemptTimeoutMs: Int?
    public var requeueBudget: RetryBudgetConfig?
    public var clientSession: SessionConfig?
    public var connectTimeoutMs: Int?
    public var tls: ClientTLSConfig?
    public var forwardClientCert: Bool?

    static func read(_ m: ConfigMapping) -> ClientOverrides {
        var overrides = ClientOverrides()
        if let pool = m.optional("hostConnectionPool") { overrides.hostConnectionPool = HostConnectionPoolConfig.read(pool) }
        if let balancer = m.optional("loadBalancer") { overrides.loadBalancer = LoadBalancerSyntax.read(balancer) }
        if let accrual = m.optional("failureAccrual") { overrides.failureAccrual = FailureAccrualConfig.read(accrual) }
        overrides.failFast = m.bool("failFast")
        overrides.requestAttemptTimeoutMs = m.int("requestAttemptTimeoutMs", in: 1...3_600_000)
        if let budget = m.optional("requeueBudget") { overrides.requeueBudget = RetryBudgetConfig.read(budget) }
        if let session = m.optional("clientSession") { overrides.clientSession = SessionConfig.read(session) }
        overrides.connectTimeoutMs = m.int("connectTimeoutMs", in: 1...600_000)
        if let tls = m.optional("tls") {
            overrides.tls = ClientTLSConfig.read(tls)
        } else if m.has("tls") {
            m.origin.error("tls is empty; give it commonName and trustCerts, or remove it for plain connections")
        }
        overrides.forwardClientCert = m.bool("forwardClientCert")
        m.unsupported(["socketOptions", "requestAuthorizers", "engine"], "remove it")
        return overrides
    }

    public var json: JSONValue {
        var pairs: [(String, JSONValue)] = []
        if let hostConnectionPool { pairs.append(("hostConnectionPool", hostConnectionPool.json)) }
        if let loadBalancer { pairs.append(("loadBalancer", LoadBalancerSyntax.json(loadBalancer))) }
        if let failureAccrual { pairs.append(("failureAccrual", failureAccrual.json)) }
        if let failFast { pairs.append(("failFast", .bool(failFast))) }
        if let requestAttemptTimeoutMs { pairs.append(("requestAttemptTimeoutMs", .int(requestAttemptTimeoutMs))) }
        if let requeueBudget { pairs.append(("requeueBudget", requeueBudget.json)) }
        if let clientSession { pairs.append(("clientSession", clientSession.json)) }
        if let connectTimeoutMs { pairs.append(("connectTimeoutMs", .int(connectTimeoutMs))) }
        if let tls { pairs.append(("tls", tls.json)) }
        if let forwardClientCert { pairs.append(("forwardClientCert", .bool(forwardClientCert))) }
        return .object(pairs)
    }
}

/// A client-name pattern for `io.l5d.static`: literal segments, `*` for any one segment, and
/// `{name}` captures (also any one segment). It matches a name that starts with it.
public struct PrefixPattern: Sendable, Hashable, CustomStringConvertible {
    public enum Element: Sendable, Hashable {
        case label(String)
        case any
        case capture(String)
    }

    public var elements: [Element]

    public func matches(_ path: Path) -> Bool {
        guard elements.count <= path.count else { return false }
        for (element, segment) in zip(elements, path.segments) {
            if case .label(let label) = element, label != segment { return false }
        }
        return true
    }

    /// The `{name}` segments' values in `path` (which this pattern matches).
    public func captures(in path: Path) -> [String: String] {
        var captures: [String: String] = [:]
        for (element, segment) in zip(elements, path.segments) {
            if case .capture(let name) = element { captures[name] = segment }
        }
        return captures
    }

    /// The names this pattern captures.
    public var captureNames: [String] {
        elements.compactMap { if case .capture(let name) = $0 { name } else { nil } }
    }

    public var description: String {
        if elements.isEmpty { return "/" }
        return elements.map { element -> String in
            switch element {
            case .label(let label): return "/" + label
            case .any: return "/*"
            case .capture(let name): return "/{\(name)}"
            }
        }.joined()
    }

    static func read(_ node: ConfigNode) -> PrefixPattern? {
        guard let text = node.string else { return nil }
        guard text.hasPrefix("/") else {
            node.error("prefix must start with '/', e.g. /#/io.l5d.fs/web or /$/inet/*/80")
            return nil
        }
        var elements: [Element] = []
        for segment in text.split(separator: "/", omittingEmptySubsequences: false).dropFirst() {
            if segment.isEmpty {
                if text == "/" { break }
                node.error("prefix '\(text)' has an empty segment")
                return nil
            }
            if segment == "*" {
                elements.append(.any)
            } else if segment.hasPrefix("{") && segment.hasSuffix("}") && segment.count > 2 {
                elements.append(.capture(String(segment.dropFirst().dropLast())))
            } else {
                elements.append(.label(String(segment)))
            }
        }
        return PrefixPattern(elements: elements)
    }
}

/// `client.hostConnectionPool`: limits of the connection pool to each endpoint (across all of
/// meshd's event loops).
public struct HostConnectionPoolConfig: Sendable, Hashable, JSONRepresentable {
    /// Idle connections kept open past `idleTimeMs`. 0–2,147,483,647. Default 0.
    public var minSize = 0
    /// Connections open to one endpoint at most. 1–2,147,483,647. Default 2,147,483,647 (unlimited).
    public var maxSize = Int(Int32.max)
    /// How long a connection may sit idle before it is closed, in ms, 1–2,147,483,647.
    /// Default: never (nil).
    public var idleTimeMs: Int?
    /// Requests that may queue for a connection when `maxSize` are open; past it, 503.
    /// 0–2,147,483,647. Default 2,147,483,647 (unlimited).
    public var maxWaiters = Int(Int32.max)

    public init() {}

    static func read(_ node: ConfigNode) -> HostConnectionPoolConfig {
        var config = HostConnectionPoolConfig()
        guard let m = node.mapping else { return config }
        config.minSize = m.int("minSize", in: 0...Int(Int32.max)) ?? config.minSize
        config.maxSize = m.int("maxSize", in: 1...Int(Int32.max)) ?? config.maxSize
        config.idleTimeMs = m.int("idleTimeMs", in: 1...Int(Int32.max))
        config.maxWaiters = m.int("maxWaiters", in: 0...Int(Int32.max)) ?? config.maxWaiters
        if config.minSize > config.maxSize {
            node.error("minSize (\(config.minSize)) is larger than maxSize (\(config.maxSize))")
        }
        m.accepted(["bufferSize"])
        m.finish()
        return config
    }

    public var json: JSONValue {
        .object([
            ("minSize", .int(minSize)), ("maxSize", .int(maxSize)),
            ("idleTimeMs", idleTimeMs.map { .int($0) } ?? .null), ("maxWaiters", .int(maxWaiters)),
        ])
    }
}
