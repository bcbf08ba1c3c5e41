import MeshCore

/// `routers[].client`: how meshd talks to the endpoints of each bound name.
public struct ClientConfig: Sendable, Hashable, JSONRepresentable {
    public var hostConnectionPool = HostConnectionPoolConfig()
    public var loadBalancer = LoadBalancerConfig.p2c(maxEffort: 5)

    public init() {}

    static let linkerdKinds = ["io.l5d.static"]

    static func read(_ node: ConfigNode?) -> ClientConfig {
        var config = ClientConfig()
        guard let node, let m = node.mapping else { return config }
        defer { m.finish() }
        guard m.kind(supported: ["io.l5d.global"], linkerdOnly: linkerdKinds, what: "client", defaultKind: "io.l5d.global") != nil else {
            m.accepted(m.keys)
            return config
        }
        if let pool = m.optional("hostConnectionPool") {
            config.hostConnectionPool = HostConnectionPoolConfig.read(pool)
        }
        if let balancer = m.optional("loadBalancer") {
            config.loadBalancer = LoadBalancerConfig.read(balancer) ?? config.loadBalancer
        }
        m.unsupported(["tls"], "client TLS is not implemented yet")
        m.unsupported(["failureAccrual", "failFast"], "failure accrual is not implemented yet")
        m.unsupported(["requestAttemptTimeoutMs", "requeueBudget", "clientSession"], "client timeouts and requeues are not implemented yet")
        m.unsupported(["socketOptions", "requestAuthorizers", "forwardClientCert", "engine"], "remove it")
        return config
    }

    public var json: JSONValue {
        .object([
            ("kind", .string("io.l5d.global")),
            ("hostConnectionPool", hostConnectionPool.json),
            ("loadBalancer", loadBalancer.json),
        ])
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

/// `client.loadBalancer`: how a client spreads requests over its endpoints.
public enum LoadBalancerConfig: Sendable, Hashable, JSONRepresentable {
    /// Least loaded of two random picks; `maxEffort` 1–100 re-picks past unavailable endpoints (default 5).
    case p2c(maxEffort: Int)

    static func read(_ node: ConfigNode) -> LoadBalancerConfig? {
        guard let m = node.mapping else { return nil }
        defer { m.finish() }
        guard let _ = m.kind(supported: ["p2c"], linkerdOnly: ["ewma", "aperture", "heap", "roundRobin"], what: "load balancer", defaultKind: "p2c") else {
            m.accepted(m.keys)
            return nil
        }
        m.unsupported(["enableProbation"], "remove it")
        return .p2c(maxEffort: m.int("maxEffort", in: 1...100) ?? 5)
    }

    public var json: JSONValue {
        switch self {
        case .p2c(let maxEffort): return .object([("kind", .string("p2c")), ("maxEffort", .int(maxEffort))])
        }
    }
}
