import MeshCore

/// `routers[].identifier`: how a request becomes a logical name under the router's `dstPrefix`.
/// One, or a list tried in order until one names the request.
public enum IdentifierConfig: Sendable, Hashable, JSONRepresentable {
    /// `io.l5d.header.token`: the value of `header` (default `Host`) as one path segment.
    case headerToken(header: String)
    /// `io.l5d.header`: the value of `header` (default `l5d-name`), which must be a path.
    case headerPath(header: String)
    /// `io.l5d.methodAndHost`: `/<version>/<method>/<host>[/<uri path>]`.
    case methodAndHost(httpUriInDst: Bool)
    /// `io.l5d.path`: the first `segments` (default 1) URI path segments; `consume` strips them
    /// from the forwarded URI.
    case path(segments: Int, consume: Bool)
    /// `io.l5d.static`: always `path`.
    case staticPath(Path)

    public static let `default` = IdentifierConfig.headerToken(header: "Host")

    static let supportedKinds = ["io.l5d.header.token", "io.l5d.header", "io.l5d.methodAndHost", "io.l5d.path", "io.l5d.static"]
    static let linkerdKinds = ["io.l5d.ingress", "io.l5d.k8s.istio", "io.l5d.k8s.istio-ingress"]

    static func readList(_ node: ConfigNode) -> [IdentifierConfig] {
        if case .sequence = node.node {
            return (node.sequence ?? []).compactMap(read)
        }
        return read(node).map { [$0] } ?? []
    }

    static func read(_ node: ConfigNode) -> IdentifierConfig? {
        guard let m = node.mapping else { return nil }
        defer { m.finish() }
        guard let kind = m.kind(supported: supportedKinds, linkerdOnly: linkerdKinds, what: "identifier") else {
            m.accepted(m.keys)
            return nil
        }
        m.accepted(["experimental"])
        switch kind {
        case "io.l5d.header.token":
            return .headerToken(header: headerName(m, default: "Host"))
        case "io.l5d.header":
            return .headerPath(header: headerName(m, default: "l5d-name"))
        case "io.l5d.methodAndHost":
            return .methodAndHost(httpUriInDst: m.bool("httpUriInDst") ?? false)
        case "io.l5d.path":
            return .path(segments: m.int("segments", in: 1...1000) ?? 1, consume: m.bool("consume") ?? false)
        default:
            guard let node = m.required("path", hint: "give the logical name, e.g. /web") else { return nil }
            return PathSyntax.read(node).map { .staticPath($0) }
        }
    }

    private static func headerName(_ m: ConfigMapping, default defaultName: String) -> String {
        guard let node = m.optional("header"), let name = node.string else { return defaultName }
        guard !name.isEmpty, name.utf8.allSatisfy(HTTPToken.isTokenByte) else {
            node.error("'\(name)' is not a valid HTTP header name")
            return defaultName
        }
        return name
    }

    public var json: JSONValue {
        switch self {
        case .headerToken(let header):
            return .object([("kind", .string("io.l5d.header.token")), ("header", .string(header))])
        case .headerPath(let header):
            return .object([("kind", .string("io.l5d.header")), ("header", .string(header))])
        case .methodAndHost(let uri):
            return .object([("kind", .string("io.l5d.methodAndHost")), ("httpUriInDst", .bool(uri))])
        case .path(let segments, let consume):
            return .object([("kind", .string("io.l5d.path")), ("segments", .int(segments)), ("consume", .bool(consume))])
        case .staticPath(let path):
            return .object([("kind", .string("io.l5d.static")), ("path", .string(path.description))])
        }
    }
}

/// RFC 9110 token characters (header names, methods).
public enum HTTPToken {
    @inlinable
    public static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"),
            UInt8(ascii: "'"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."),
            UInt8(ascii: "^"), UInt8(ascii: "_"), UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
            return true
        default:
            return false
        }
    }
}
