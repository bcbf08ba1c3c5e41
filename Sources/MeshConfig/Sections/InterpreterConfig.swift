import Foundation
import MeshCore

/// `routers[].interpreter`: how names are bound, and transformations of the result.
public struct InterpreterConfig: Sendable, Hashable, JSONRepresentable {
    public enum Kind: Sendable, Hashable {
        /// The configured namers plus the `/$/` system namers.
        case `default`
        /// The same, with dentries read from a watched file placed before the router's `dtab`.
        case fs(dtabFile: String, initial: Dtab)
    }

    public var kind: Kind = .default
    /// Applied in order to every bound name.
    public var transformers: [TransformerConfig] = []

    public init() {}

    static let linkerdKinds = ["io.l5d.namerd", "io.l5d.namerd.http", "io.l5d.mesh", "io.l5d.k8s.configMap", "io.l5d.consul.interpreter", "io.l5d.k8s.istio"]

    static func read(_ node: ConfigNode) -> InterpreterConfig {
        var config = InterpreterConfig()
        guard let m = node.mapping else { return config }
        defer { m.finish() }
        m.accepted(["experimental"])
        guard let kind = m.kind(supported: ["default", "io.l5d.fs"], linkerdOnly: linkerdKinds, what: "interpreter", defaultKind: "default") else {
            m.accepted(m.keys)
            return config
        }
        if kind == "io.l5d.fs", let fileNode = m.required("dtabFile", hint: "name the file that holds the dtab"), let file = fileNode.string {
            config.kind = .fs(dtabFile: file, initial: DtabFile.read(file, node: fileNode) ?? .empty)
        }
        if let list = m.optional("transformers")?.sequence {
            config.transformers = list.compactMap(TransformerConfig.read)
        }
        return config
    }

    public var json: JSONValue {
        var pairs: [(String, JSONValue)] = []
        switch kind {
        case .default: pairs.append(("kind", .string("default")))
        case .fs(let file, _): pairs += [("kind", .string("io.l5d.fs")), ("dtabFile", .string(file))]
        }
        pairs.append(("transformers", .array(transformers.map(\.json))))
        return .object(pairs)
    }
}

/// Reading the dtab file of the `io.l5d.fs` interpreter.
public enum DtabFile {
    public enum Problem: Error, CustomStringConvertible {
        case unreadable(String)
        case invalid(NameSyntaxError)

        public var description: String {
            switch self {
            case .unreadable(let reason): return reason
            case .invalid(let error): return "invalid dtab: \(error)"
            }
        }
    }

    public static func load(_ path: String) -> Result<Dtab, Problem> {
        guard let data = FileManager.default.contents(atPath: path) else {
            return .failure(.unreadable(FileManager.default.fileExists(atPath: path) ? "cannot read \(path)" : "no such file \(path)"))
        }
        do {
            return .success(try Dtab.read(String(decoding: data, as: UTF8.self)))
        } catch {
            return .failure(.invalid(error))
        }
    }

    static func read(_ path: String, node: ConfigNode) -> Dtab? {
        switch load(path) {
        case .success(let dtab): return dtab
        case .failure(let problem):
            node.error("dtabFile: \(problem) (relative paths are relative to the working directory)")
            return nil
        }
    }
}

/// `interpreter.transformers[]`: rewrite the addresses (or names) that binding produced.
public enum TransformerConfig: Sendable, Hashable, JSONRepresentable {
    /// Keep only endpoints on this host.
    case localhost
    /// Keep only endpoints at `host`'s address.
    case specificHost(String)
    /// Send to `port` instead of each endpoint's own port.
    case port(Int)
    /// Route every name that bound to `path` instead; names that did not bind stay unbound.
    case replace(Path)
    /// Route every name to `path`, bound or not.
    case const(Path)

    static let supportedKinds = ["io.l5d.localhost", "io.l5d.specificHost", "io.l5d.port", "io.l5d.replace", "io.l5d.const"]
    static let linkerdKinds = ["io.l5d.k8s.daemonset", "io.l5d.k8s.localnode", "io.l5d.ec2Host"]

    static func read(_ node: ConfigNode) -> TransformerConfig? {
        guard let m = node.mapping else { return nil }
        defer { m.finish() }
        guard let kind = m.kind(supported: supportedKinds, linkerdOnly: linkerdKinds, what: "transformer") else {
            m.accepted(m.keys)
            return nil
        }
        switch kind {
        case "io.l5d.localhost":
            return .localhost
        case "io.l5d.specificHost":
            return m.required("host", hint: "give the host whose endpoints to keep")?.string.map { .specificHost($0) }
        case "io.l5d.port":
            return m.required("port")?.int(in: 1...65535).map { .port($0) }
        default:
            guard let pathNode = m.required("path", hint: "give a concrete name such as /$/inet/127.0.0.1/4141"), let path = PathSyntax.read(pathNode) else { return nil }
            guard path.segments.first == "$" || path.segments.first == "#" else {
                pathNode.error("path must be a concrete name bound by a namer (starting with /$/ or /#/)")
                return nil
            }
            return kind == "io.l5d.replace" ? .replace(path) : .const(path)
        }
    }

    public var kind: String {
        switch self {
        case .localhost: return "io.l5d.localhost"
        case .specificHost: return "io.l5d.specificHost"
        case .port: return "io.l5d.port"
        case .replace: return "io.l5d.replace"
        case .const: return "io.l5d.const"
        }
    }

    public var json: JSONValue {
        switch self {
        case .localhost: return .object([("kind", .string(kind))])
        case .specificHost(let host): return .object([("kind", .string(kind)), ("host", .string(host))])
        case .port(let port): return .object([("kind", .string(kind)), ("port", .int(port))])
        case .replace(let path), .const(let path): return .object([("kind", .string(kind)), ("path", .string(path.description))])
        }
    }
}
