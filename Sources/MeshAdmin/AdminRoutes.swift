// What the admin port answers, path by path. Every answer is built from snapshots; nothing here
// reaches into a router's live state.

import Foundation
import MeshConfig
import MeshCore
import MeshDiscovery
import MeshProxy
import MeshTLS
import MeshTelemetry
import NIOCore

/// An admin response: status, content type and body.
public struct AdminResponse: Sendable {
    public var status: Int
    public var contentType: String
    public var body: String

    static func text(_ body: String, status: Int = 200) -> AdminResponse {
        AdminResponse(status: status, contentType: "text/plain; charset=utf-8", body: body)
    }

    static func json(_ value: JSONValue, pretty: Bool = true) -> AdminResponse {
        AdminResponse(status: 200, contentType: "application/json", body: value.serialized(pretty: pretty) + "\n")
    }
}

/// The admin port's routes over one running linker.
public struct AdminRoutes: Sendable {
    let linker: Linker
    let prometheusPaths: [String: String]
    let requestShutdown: @Sendable () -> Void
    let adminAddress: @Sendable () -> String

    public init(linker: Linker, adminAddress: @escaping @Sendable () -> String, requestShutdown: @escaping @Sendable () -> Void) {
        self.linker = linker
        self.adminAddress = adminAddress
        self.requestShutdown = requestShutdown
        var paths = ["/admin/metrics/prometheus": ""]
        for telemeter in linker.config.telemetry {
            if case .prometheus(let config) = telemeter { paths[config.path] = config.prefix }
        }
        self.prometheusPaths = paths
    }

    static let index = [
        "/admin/ping", "/admin/ready", "/admin/metrics/prometheus", "/admin/metrics.json", "/config.json",
        "/admin/listeners.json", "/client_state.json", "/namer_state/<kind>.json", "/bound-names.json",
        "/delegator.json?path=/svc/NAME[&namespace=ROUTER][&dtab=DENTRIES]", "/delegator", "/requests (io.l5d.recentRequests)",
        "/admin/tls.json", "/admin/shutdown (POST)",
    ]

    /// Answers `method path?query`.
    public func respond(method: String, uri: String) -> AdminResponse {
        let parts = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let path = String(parts[0])
        let query = parts.count > 1 ? String(parts[1]) : ""
        if let prefix = prometheusPaths[path] {
            return AdminResponse(status: 200, contentType: "text/plain; version=0.0.4; charset=utf-8", body: linker.metrics.prometheusText(prefix: prefix))
        }
        switch path {
        case "/admin/ping":
            return .text("pong")
        case "/admin/ready":
            return linker.isReady ? .text("ready") : .text("not ready", status: 503)
        case "/config.json":
            return .json(linker.config.json)
        case "/admin/tls.json":
            return .json(linker.tls.summary)
        case "/admin/metrics.json":
            let pretty = query.split(separator: "&").contains("pretty=1")
            return .json(.object(linker.metrics.samples().map { ($0.0, .double($0.1)) }), pretty: pretty)
        case "/admin/listeners.json":
            var routers: [(String, JSONValue)] = []
            for (router, address) in linker.listenAddresses {
                if let index = routers.firstIndex(where: { $0.0 == router }), case .array(let list) = routers[index].1 {
                    routers[index].1 = .array(list + [.string(address)])
                } else {
                    routers.append((router, .array([.string(address)])))
                }
            }
            return .json(.object([("admin", .string(adminAddress())), ("routers", .object(routers))]))
        case "/client_state.json":
            return .json(clientState())
        case "/delegator.json":
            return delegate(QueryString.parse(query))
        case "/delegator":
            return AdminResponse(status: 200, contentType: "text/html; charset=utf-8", body: DelegatorPage.html(routers: linker.routers.map(\.label)))
        case "/requests", "/requests.json":
            guard let recent = linker.recentRequests else {
                return .text("no io.l5d.recentRequests telemeter is configured\n", status: 404)
            }
            let now = NIODeadline.now().uptimeNanoseconds
            return .json(.array(recent.snapshot.map { entry in
                .object([
                    ("router", .string(entry.router)), ("method", .string(entry.method)), ("uri", .string(entry.uri)),
                    ("host", .string(entry.host)), ("status", .int(entry.status)),
                    ("durationMs", .double(Double(entry.durationNanos) / 1_000_000)),
                    ("agoMs", .int(Int((now &- entry.uptimeNanos) / 1_000_000))),
                    ("client", .string(entry.client)), ("endpoint", .string(entry.endpoint)),
                ])
            }))
        case "/bound-names.json":
            let names = linker.namerStates().flatMap { state in
                state.names.keys.sorted().map { JSONValue.string((Path(segments: ["#"] + state.prefix.segments) + Path($0)).description) }
            }
            return .json(.array(names))
        case "/admin/shutdown":
            guard method == "POST" else { return .text("use POST to shut meshd down\n", status: 405) }
            requestShutdown()
            return .text("shutting down\n")
        case "/admin", "/admin/", "/":
            return .text(AdminRoutes.index.joined(separator: "\n") + "\n")
        default:
            if path.hasPrefix("/namer_state/"), path.hasSuffix(".json") {
                let kind = String(path.dropFirst("/namer_state/".count).dropLast(".json".count))
                if let state = linker.namerStates().first(where: { $0.kind == kind || $0.prefix.description == "/" + kind }) {
                    return .json(namerState(state))
                }
            }
            return .text("no such admin path: \(path)\n", status: 404)
        }
    }

    /// `/delegator.json?path=…[&namespace=router][&dtab=extra dentries]`.
    private func delegate(_ parameters: [String: String]) -> AdminResponse {
        guard let pathText = parameters["path"], !pathText.isEmpty else {
            return .text("missing the 'path' parameter, e.g. /delegator.json?path=/svc/web\n", status: 400)
        }
        let label = parameters["namespace"] ?? linker.routers.first?.label ?? ""
        guard let router = linker.routers.first(where: { $0.label == label }) else {
            return .text("no router labelled '\(label)'; routers: \(linker.routers.map(\.label).joined(separator: ", "))\n", status: 404)
        }
        let path: Path
        do {
            path = try Path.read(pathText)
        } catch {
            return .text("Invalid path: \(error)\n", status: 400)
        }
        var extra = Dtab.empty
        if let dtabText = parameters["dtab"], !dtabText.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
            do {
                extra = try Dtab.read(dtabText)
            } catch {
                return .text("Invalid dtab: \(error)\n", status: 400)
            }
        }
        return .json(DelegatorJSON.tree(router.delegator(local: extra).delegate(path)))
    }

    private func clientState() -> JSONValue {
        var routers: [(String, JSONValue)] = []
        for router in linker.routers {
            let clients = router.clientSnapshots().map { client -> (String, JSONValue) in
                let endpoints = client.endpoints.map { endpoint -> JSONValue in
                    .object([
                        ("address", .string(endpoint.address)), ("weight", .double(endpoint.weight)), ("load", .int(endpoint.load)),
                        ("status", .string(endpoint.status)), ("available", .bool(endpoint.status == "available" || endpoint.status == "probe due")),
                        ("latencyEstimateMs", .double(endpoint.latencyEstimateMs)),
                        ("openConnections", .int(endpoint.openConnections)), ("idleConnections", .int(endpoint.idleConnections)),
                    ])
                }
                return (client.id, .object([
                    ("state", .string(AddrText.state(client.addr))), ("balancer", .string(client.balancer)), ("endpoints", .array(endpoints)),
                ]))
            }
            routers.append((router.label, .object(clients)))
        }
        return .object(routers)
    }

    private func namerState(_ state: NamerState) -> JSONValue {
        let names = state.names.keys.sorted().map { name -> (String, JSONValue) in
            let addr = state.names[name]!
            var pairs: [(String, JSONValue)] = [("state", .string(AddrText.state(addr))), ("endpoints", .array(addr.endpoints.map { .string($0.description) }))]
            if let problems = state.problems[name] { pairs.append(("problems", .array(problems.map { .string($0) }))) }
            return (name, .object(pairs))
        }
        return .object([("kind", .string(state.kind)), ("prefix", .string(state.prefix.description)), ("names", .object(names))])
    }
}

enum AddrText {
    static func state(_ addr: Addr) -> String {
        switch addr {
        case .pending: return "pending"
        case .bound: return "bound"
        case .neg: return "neg"
        case .failed(let reason): return "failed: \(reason)"
        }
    }
}
