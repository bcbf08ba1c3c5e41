import MeshCore

/// `admin`: the admin HTTP server (health, metrics, config, routing state).
public struct AdminConfig: Sendable, Hashable, JSONRepresentable {
    /// Listen address. Default `127.0.0.1` (Linkerd ≥ 1.2).
    public var ip: String = "127.0.0.1"
    /// Listen port, 0–65535 (0 picks a free port). Default 9990.
    public var port: Int = 9990
    /// How long a graceful shutdown (SIGTERM, SIGINT) waits for in-flight requests before closing
    /// what is left, in milliseconds, 0–3,600,000. Default 10,000.
    public var shutdownGraceMs: Int = 10_000
    /// Owners (clients, services, endpoints) per metric scope whose series are kept apart, 1–1,000,000;
    /// owners past it share series labelled `other`. Default 1,000. meshd's own key.
    public var metricSeriesLimit: Int = 1000
    /// TLS on the admin listener, the same block as a server's (docs/config/tls.md). Default: plain.
    public var tls: ServerTLSConfig?
    public var origin: ConfigOrigin = .builtIn

    public init() {}

    /// `ip:port`, as a server's `address`.
    public var address: String { ListenAddress.text(ip: ip, port: port) }

    static func read(_ node: ConfigNode?) -> AdminConfig {
        var config = AdminConfig()
        guard let node, let m = node.mapping else { return config }
        config.origin = node.origin
        if let ip = m.optional("ip") { config.ip = IPAddressSyntax.read(ip) ?? config.ip }
        config.port = m.int("port", in: 0...65535) ?? config.port
        config.shutdownGraceMs = m.int("shutdownGraceMs", in: 0...3_600_000) ?? config.shutdownGraceMs
        config.metricSeriesLimit = m.int("metricSeriesLimit", in: 1...1_000_000) ?? config.metricSeriesLimit
        m.accepted(["workerThreads"])
        if let tls = m.optional("tls") {
            if let parsed = ServerTLSConfig.read(tls), parsed.enabled { config.tls = parsed }
        } else if m.has("tls") {
            m.origin.error("tls is empty; give it certPath and keyPath, or remove it for a plain admin port")
        }
        m.unsupported(["socketOptions", "httpIdentifierPort", "security"], "remove it")
        m.finish()
        return config
    }

    public var json: JSONValue {
        .object([
            ("ip", .string(ip)), ("port", .int(port)), ("shutdownGraceMs", .int(shutdownGraceMs)), ("metricSeriesLimit", .int(metricSeriesLimit)),
            ("tls", tls?.json ?? .null),
        ])
    }
}

enum IPAddressSyntax {
    /// A numeric IPv4 or IPv6 listen address (or `localhost`, read as 127.0.0.1).
    static func read(_ node: ConfigNode) -> String? {
        guard let text = node.string else { return nil }
        if text == "localhost" { return "127.0.0.1" }
        let bare = text.hasPrefix("[") && text.hasSuffix("]") ? String(text.dropFirst().dropLast()) : text
        if isIPv4(bare) || isIPv6(bare) { return bare }
        node.error("'\(text)' is not an IP address; use a numeric address such as 127.0.0.1, 0.0.0.0 or ::1")
        return nil
    }

    static func isIPv4(_ text: String) -> Bool {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts.allSatisfy { part in
            !part.isEmpty && part.count <= 3 && part.allSatisfy(\.isNumber) && (Int(part) ?? 256) <= 255
        }
    }

    static func isIPv6(_ text: String) -> Bool {
        text.contains(":") && text.allSatisfy { $0.isHexDigit || $0 == ":" || $0 == "." }
            && text.components(separatedBy: "::").count <= 2
    }
}
