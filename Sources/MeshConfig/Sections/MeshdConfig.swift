import MeshCore

/// The whole config file: Linkerd 1.x's schema, with meshd's defaults filled in.
public struct MeshdConfig: Sendable, Hashable, JSONRepresentable {
    public var admin = AdminConfig()
    public var namers: [NamerConfig] = []
    public var routers: [RouterConfig] = []
    public var telemetry: [TelemeterConfig] = []
    /// The file this was read from.
    public var file: String = ""

    public init() {}

    static func read(_ root: ConfigNode) -> MeshdConfig {
        var config = MeshdConfig()
        config.file = root.diagnostics.file
        guard let m = root.mapping else { return config }
        config.admin = AdminConfig.read(m.optional("admin"))
        config.namers = (m.optional("namers")?.sequence ?? []).compactMap(NamerConfig.read)
        if let routers = m.required("routers", hint: "add at least one router, e.g. a 'protocol: http' router with a server on port 4140")?.sequence {
            config.routers = routers.compactMap(RouterConfig.read)
            if routers.isEmpty { root.diagnostics.report("at least one router is required", at: root.mark, path: "routers") }
        }
        config.telemetry = (m.optional("telemetry")?.sequence ?? []).compactMap(TelemeterConfig.read)
        // meshd never reports usage anywhere; the block is accepted so Linkerd configs run unchanged.
        m.accepted(["usage"])
        m.unsupported(["tracers"], "replaced by 'telemetry' in Linkerd 0.9")
        m.finish()
        config.validate(root.diagnostics)
        return config
    }

    /// Checks that span sections: unique router labels, one listener per address, namer prefixes.
    private func validate(_ diagnostics: ConfigDiagnostics) {
        var labels: [String: ConfigOrigin] = [:]
        for router in routers {
            if let first = labels[router.label] {
                report(diagnostics, router.origin, "router label '\(router.label)' is already used by the router at line \(first.line); give each router a unique 'label'")
            } else {
                labels[router.label] = router.origin
            }
        }
        var listeners: [String: ConfigOrigin] = [:]
        func claim(ip: String, port: Int, origin: ConfigOrigin, what: String) {
            guard port != 0 else { return }
            let wildcard = ip == "0.0.0.0" || ip == "::"
            for (key, other) in listeners {
                let parts = key.split(separator: " ")
                guard Int(parts[1]) == port else { continue }
                let otherIP = String(parts[0])
                if otherIP == ip || wildcard || otherIP == "0.0.0.0" || otherIP == "::" {
                    report(diagnostics, origin, "\(what) \(ip):\(port) conflicts with the listener at line \(other.line) (\(other.keyPath)); use another port")
                    return
                }
            }
            listeners["\(ip) \(port)"] = origin
        }
        claim(ip: admin.ip, port: admin.port, origin: admin.origin, what: "admin listener")
        for router in routers {
            for server in router.servers {
                claim(ip: server.ip, port: server.port, origin: server.origin, what: "server")
            }
        }
        var prefixes: Set<Path> = []
        for namer in namers where !prefixes.insert(namer.prefix).inserted {
            diagnostics.report("two namers use the prefix \(namer.prefix); set 'prefix' on one of them", line: 0, column: 0, path: "namers")
        }
    }

    private func report(_ diagnostics: ConfigDiagnostics, _ origin: ConfigOrigin, _ message: String) {
        diagnostics.report(message, line: origin.line, column: origin.column, path: origin.keyPath)
    }

    public var json: JSONValue {
        .object([
            ("admin", admin.json),
            ("namers", .array(namers.map(\.json))),
            ("routers", .array(routers.map(\.json))),
            ("telemetry", .array(telemetry.map(\.json))),
        ])
    }
}
