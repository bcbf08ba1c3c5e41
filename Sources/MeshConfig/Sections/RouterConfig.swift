import MeshCore

/// `routers[]`: one protocol, its listeners, and how its requests are named, routed and sent.
public struct RouterConfig: Sendable, Hashable, JSONRepresentable {
    /// Only `http` (HTTP/1.1) today.
    public var `protocol` = "http"
    /// Unique name in metrics and the admin port. Default: the protocol.
    public var label = "http"
    /// Prefix of the logical names identifiers produce. Default `/svc`.
    public var dstPrefix = Path("svc")
    /// The delegation table. Default empty.
    public var dtab = Dtab.empty
    /// Tried in order until one names the request. Default `io.l5d.header.token` on `Host`.
    public var identifiers: [IdentifierConfig] = [.default]
    public var servers: [ServerConfig] = []
    public var client = ClientConfig()
    public var service = ServiceConfig()
    /// Largest request line, in KB, 1–64. Default 4; longer gets 414.
    public var maxInitialLineKB = 4
    /// Largest header section, in KB, 1–64. Default 8; larger gets 431.
    public var maxHeadersKB = 8
    /// Limits of the delegation caches (Linkerd's `bindingCache`).
    public var bindingCache = BindingCacheConfig()
    /// How names bind: the interpreter kind and its transformers.
    public var interpreter = InterpreterConfig()
    /// How long a request may wait for a name to bind (discovery still pending), in ms.
    /// 1–3,600,000. Default 10,000.
    public var bindingTimeoutMs = 10_000
    public var origin: ConfigOrigin = .builtIn

    public static let supportedProtocols = ["http"]
    static let linkerdProtocols = ["h2", "thrift", "thriftmux", "mux"]

    static func read(_ node: ConfigNode) -> RouterConfig? {
        guard let m = node.mapping else { return nil }
        defer { m.finish() }
        var config = RouterConfig()
        config.origin = node.origin
        guard let proto = m.kind(key: "protocol", supported: supportedProtocols, linkerdOnly: linkerdProtocols, what: "router") else {
            m.accepted(m.keys)
            return nil
        }
        config.protocol = proto
        config.label = m.string("label") ?? proto
        if let prefix = m.optional("dstPrefix") { config.dstPrefix = PathSyntax.read(prefix) ?? config.dstPrefix }
        if let dtab = m.optional("dtab") { config.dtab = DtabSyntax.read(dtab) ?? .empty }
        if let identifier = m.optional("identifier") {
            let identifiers = IdentifierConfig.readList(identifier)
            if !identifiers.isEmpty { config.identifiers = identifiers }
        }
        if let servers = m.required("servers", hint: "add a listener, e.g. servers: [{port: 4140}]")?.sequence {
            if servers.isEmpty { m.origin.error("a router needs at least one server in 'servers'") }
            config.servers = servers.map { ServerConfig.read($0, defaultPort: 4140) }
        }
        config.client = ClientConfig.read(m.optional("client"))
        config.service = ServiceConfig.read(m.optional("service"))
        config.maxInitialLineKB = m.int("maxInitialLineKB", in: 1...64) ?? config.maxInitialLineKB
        config.maxHeadersKB = m.int("maxHeadersKB", in: 1...64) ?? config.maxHeadersKB
        if let cache = m.optional("bindingCache") { config.bindingCache = BindingCacheConfig.read(cache) }
        config.bindingTimeoutMs = m.int("bindingTimeoutMs", in: 1...3_600_000) ?? config.bindingTimeoutMs
        if let interpreter = m.optional("interpreter") { config.interpreter = InterpreterConfig.read(interpreter) }
        if let streaming = m.optional("streamingEnabled"), streaming.bool == false {
            streaming.error("meshd always streams bodies; remove streamingEnabled: false")
        }
        // Keys whose behaviour meshd always has (bodies stream; no size caps beyond the header limits).
        m.accepted(["originator", "experimental", "streamAfterContentLengthKB", "maxChunkKB", "maxRequestKB", "maxResponseKB"])
        m.unsupported(["httpAccessLog", "httpAccessLogRollPolicy", "httpAccessLogAppend", "httpAccessLogRotateCount"], "access logs are not implemented yet")
        m.unsupported(["tracePropagator"], "trace propagation is not implemented yet")
        m.unsupported(["compressionLevel"], "meshd does not compress responses; remove it")
        m.unsupported(["maxErrResponseKB", "announcers", "loggers"], "remove it")
        m.unsupported(["baseDtab"], "it was renamed 'dtab' in Linkerd 0.9")
        m.unsupported(["timeoutMs"], "Linkerd 1.0 split it into client.requestAttemptTimeoutMs and service.totalTimeoutMs")
        m.unsupported(["responseClassifier"], "it moved to service.responseClassifier in Linkerd 1.0")
        return config
    }

    public var json: JSONValue {
        var pairs: [(String, JSONValue)] = [
            ("protocol", .string(self.protocol)), ("label", .string(label)),
            ("dstPrefix", .string(dstPrefix.description)), ("dtab", .string(dtab.description)),
        ]
        pairs.append(("identifier", identifiers.count == 1 ? identifiers[0].json : .array(identifiers.map(\.json))))
        pairs.append(("interpreter", interpreter.json))
        pairs.append(("maxInitialLineKB", .int(maxInitialLineKB)))
        pairs.append(("maxHeadersKB", .int(maxHeadersKB)))
        pairs.append(("bindingTimeoutMs", .int(bindingTimeoutMs)))
        pairs.append(("bindingCache", bindingCache.json))
        pairs.append(("servers", .array(servers.map(\.json))))
        pairs.append(("client", client.json))
        pairs.append(("service", service.json))
        return .object(pairs)
    }
}

/// `routers[].bindingCache`: sizes of the delegation caches.
public struct BindingCacheConfig: Sendable, Hashable, JSONRepresentable {
    /// Logical names whose delegation is cached. 1–1,000,000. Default 1,000.
    public var paths = 1000
    /// Bound trees cached. 1–1,000,000. Default 1,000.
    public var trees = 1000
    /// Bound names cached. 1–1,000,000. Default 1,000.
    public var bounds = 1000
    /// Clients (one per bound name) kept. 1–1,000,000. Default 1,000.
    public var clients = 1000
    /// A client unused for this long is closed, in seconds, 1–86,400. Default 600.
    public var idleTtlSecs = 600

    public init() {}

    static func read(_ node: ConfigNode) -> BindingCacheConfig {
        var config = BindingCacheConfig()
        guard let m = node.mapping else { return config }
        config.paths = m.int("paths", in: 1...1_000_000) ?? config.paths
        config.trees = m.int("trees", in: 1...1_000_000) ?? config.trees
        config.bounds = m.int("bounds", in: 1...1_000_000) ?? config.bounds
        config.clients = m.int("clients", in: 1...1_000_000) ?? config.clients
        config.idleTtlSecs = m.int("idleTtlSecs", in: 1...86_400) ?? config.idleTtlSecs
        m.finish()
        return config
    }

    public var json: JSONValue {
        .object([("paths", .int(paths)), ("trees", .int(trees)), ("bounds", .int(bounds)), ("clients", .int(clients)), ("idleTtlSecs", .int(idleTtlSecs))])
    }
}

enum DtabSyntax {
    /// Reads a dtab; a syntax error points at its line and column in the YAML file.
    static func read(_ node: ConfigNode) -> Dtab? {
        guard let text = node.string else { return nil }
        do {
            return try Dtab.read(text)
        } catch {
            let (line, column) = error.lineAndColumn
            var fileLine = node.mark?.line ?? 0
            var fileColumn = node.mark?.column ?? 0
            switch node.node.scalar?.style {
            case .literal?, .folded?:
                // A block scalar's content starts on the line after its `|` or `>`, indented.
                fileLine += line
                fileColumn = node.diagnostics.indentation(ofLine: fileLine) + column
            case .singleQuoted?, .doubleQuoted?:
                if line == 1 { fileColumn += column } else { fileLine += line - 1; fileColumn = column }
            default:
                if line == 1 { fileColumn += column - 1 } else { fileLine += line - 1; fileColumn = column }
            }
            let pointer = error.pointer.split(separator: "\n", omittingEmptySubsequences: false).map { "    " + $0 }.joined(separator: "\n")
            node.diagnostics.report("invalid dtab: \(error.message)\n\(pointer)", line: fileLine, column: fileColumn, path: node.path)
            return nil
        }
    }
}
