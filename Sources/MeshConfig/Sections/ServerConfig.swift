import MeshCore

/// `routers[].servers[]`: a listener of a router.
public struct ServerConfig: Sendable, Hashable, JSONRepresentable {
    /// Listen address. Default `127.0.0.1` (loopback, as Linkerd); `0.0.0.0` for every interface.
    public var ip: String = "127.0.0.1"
    /// Listen port, 0–65535 (0 picks a free port). Default: the protocol's (http 4140).
    public var port: Int
    /// Requests served at once on this listener; past it, new requests get 503 at once.
    /// 1–2,147,483,647. Default: unlimited (nil).
    public var maxConcurrentRequests: Int?
    /// Strip incoming `l5d-*` context headers and `l5d-*` response headers (for listeners that
    /// face untrusted clients). Default false.
    public var clearContext: Bool = false
    /// Refuse a request whose `Via` header already lists this many hops (loop protection).
    /// 1–10,000. Default 1,000.
    public var maxCallDepth: Int = 1000
    /// Every request on this listener, retries included, must get its response head within
    /// this, in ms, 1–3,600,000. Default: none (nil).
    public var timeoutMs: Int?
    /// Client connections: closed after `idleTimeMs` without a request, and after `lifeTimeMs`.
    /// On a listener, `idleTimeMs` defaults to 60,000 (meshd's default; Linkerd has none): an
    /// idle keep-alive connection holds one of the listener's `maxConnections` places, so it
    /// cannot hold it forever.
    public var serverSession = SessionConfig(idleTimeMs: ServerConfig.defaultIdleTimeMs)
    public static let defaultIdleTimeMs = 60_000
    /// A client must send a whole request head within this, in ms, 1–3,600,000, counted from
    /// the connection's start for its first request and from the first byte of each later one
    /// (HAProxy's `timeout http-request`); a slow one gets 408 and is closed. Default 10,000.
    /// meshd's own key.
    public var requestHeadTimeoutMs = 10_000
    /// Client connections open at once on this listener, 1–1,000,000; past it, meshd stops
    /// accepting until one closes (new clients wait in the listen backlog). Default 10,000.
    /// meshd's own key.
    public var maxConnections = 10_000
    /// TLS on this listener (docs/config/tls.md). Default: plain (nil).
    public var tls: ServerTLSConfig?
    public var origin: ConfigOrigin = .builtIn

    init(defaultPort: Int) { self.port = defaultPort }

    static func read(_ node: ConfigNode, defaultPort: Int) -> ServerConfig {
        var config = ServerConfig(defaultPort: defaultPort)
        config.origin = node.origin
        guard let m = node.mapping else { return config }
        if let ip = m.optional("ip") { config.ip = IPAddressSyntax.read(ip) ?? config.ip }
        config.port = m.int("port", in: 0...65535) ?? config.port
        config.maxConcurrentRequests = m.int("maxConcurrentRequests", in: 1...Int(Int32.max))
        config.clearContext = m.bool("clearContext") ?? false
        config.maxCallDepth = m.int("maxCallDepth", in: 1...10_000) ?? config.maxCallDepth
        config.timeoutMs = m.int("timeoutMs", in: 1...3_600_000)
        if let session = m.optional("serverSession") {
            config.serverSession = SessionConfig.read(session)
            if config.serverSession.idleTimeMs == nil { config.serverSession.idleTimeMs = Self.defaultIdleTimeMs }
        }
        config.requestHeadTimeoutMs = m.int("requestHeadTimeoutMs", in: 1...3_600_000) ?? config.requestHeadTimeoutMs
        config.maxConnections = m.int("maxConnections", in: 1...1_000_000) ?? config.maxConnections
        m.accepted(["label"])
        if let tls = m.optional("tls") {
            if let parsed = ServerTLSConfig.read(tls), parsed.enabled { config.tls = parsed }
        } else if m.has("tls") {
            m.origin.error("tls is empty; give it certPath and keyPath, or remove it for a plain listener")
        }
        m.unsupported(["announce"], "meshd has no announcers")
        m.unsupported(["socketOptions", "addForwardedHeader", "timestampHeader", "engine"], "remove it")
        m.finish()
        return config
    }

    /// `ip:port`, bracketing IPv6.
    public var address: String { ListenAddress.text(ip: ip, port: port) }

    public var json: JSONValue {
        var pairs: [(String, JSONValue)] = [("ip", .string(ip)), ("port", .int(port))]
        pairs.append(("maxConcurrentRequests", maxConcurrentRequests.map { .int($0) } ?? .null))
        pairs.append(("clearContext", .bool(clearContext)))
        pairs.append(("maxCallDepth", .int(maxCallDepth)))
        pairs.append(("timeoutMs", timeoutMs.map { .int($0) } ?? .null))
        pairs.append(("serverSession", serverSession.json))
        pairs.append(("requestHeadTimeoutMs", .int(requestHeadTimeoutMs)))
        pairs.append(("maxConnections", .int(maxConnections)))
        pairs.append(("tls", tls?.json ?? .null))
        return .object(pairs)
    }
}

/// `ip:port`, bracketing IPv6: how listeners (servers and the admin port) are named.
enum ListenAddress {
    static func text(ip: String, port: Int) -> String { ip.contains(":") ? "[\(ip)]:\(port)" : "\(ip):\(port)" }
}
