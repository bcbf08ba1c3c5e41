// Every TLS context one config asks for: each listener's and each client `tls` block's, loaded
// at start-up (a bad file is a config error at its key, reported by `meshd check` too) and
// watched for changes from then on.

import Logging
import MeshConfig
import MeshCore
import MeshRouting
import MeshTelemetry
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

package final class TLSSet: Sendable {
    /// Listener sources, by router label and listen address.
    private let servers: [String: TLSContextSource]
    private let clients: [TLSContextSource]
    private let metrics: TLSMetrics
    private let logger: Logger
    /// The file checks and reloads, on a thread of their own: reading files and parsing keys
    /// must not hold up an event loop that serves requests.
    private let reloader = NIOLockedValueBox<(group: MultiThreadedEventLoopGroup, task: RepeatedTask)?>(nil)

    /// How often files are checked for changes.
    package static let checkInterval = TimeAmount.seconds(1)

    /// Loads everything `config` names; what cannot be loaded comes back as config errors.
    package static func load(_ config: MeshdConfig, metrics: TLSMetrics, logger: Logger) -> (TLSSet, [ConfigError]) {
        var errors: [ConfigError] = []
        var servers: [String: TLSContextSource] = [:]
        var clients: [TLSContextSource] = []
        if let tls = config.admin.tls {
            let address = config.admin.address
            do {
                servers[key(adminLabel, address)] = try TLSContextSource(.server(router: adminLabel, address: address, tls), metrics: metrics, logger: logger)
            } catch {
                errors.append(error.configError)
            }
        }
        for router in config.routers {
            for server in router.servers {
                guard let tls = server.tls else { continue }
                do {
                    servers[key(router.label, server.address)] = try TLSContextSource(.server(router: router.label, address: server.address, tls), metrics: metrics, logger: logger)
                } catch {
                    errors.append(error.configError)
                }
            }
            let blocks = [router.client.base.tls].compactMap { $0 } + router.client.configs.compactMap(\.overrides.tls)
            for tls in blocks {
                if tls.disableValidation {
                    logger.warning("client TLS with disableValidation: endpoints' certificates are not checked, so anyone on the path can impersonate them", metadata: [
                        LogKeys.router: "\(router.label)", LogKeys.config: "\(tls.origin)",
                    ])
                }
                do {
                    clients.append(try TLSContextSource(.client(router: router.label, TLSUpstreamFactory.key(tls)), metrics: metrics, logger: logger))
                } catch {
                    errors.append(error.configError)
                }
            }
        }
        return (TLSSet(servers: servers, clients: clients, metrics: metrics, logger: logger), errors)
    }

    private init(servers: [String: TLSContextSource], clients: [TLSContextSource], metrics: TLSMetrics, logger: Logger) {
        self.servers = servers
        self.clients = clients
        self.metrics = metrics
        self.logger = logger
    }

    private static func key(_ router: String, _ address: String) -> String { router + " " + address }

    /// The `router` label of the admin listener's TLS metrics and log lines.
    package static let adminLabel = "admin"

    /// What the admin listener puts in front of its codec; nil for a plain one.
    package func adminTransport(_ admin: AdminConfig) -> (any ListenerTransport)? {
        guard admin.tls != nil, let source = servers[Self.key(Self.adminLabel, admin.address)] else { return nil }
        return ServerTLSTransport(source: source, metrics: metrics, logger: logger)
    }

    /// What `/admin/tls.json` shows: every context, its files and certificates (never a key).
    package var summary: JSONValue {
        .array(sources.map { source -> JSONValue in
            let loaded = source.loaded
            var pairs: [(String, JSONValue)] = []
            switch source.role {
            case .server(let router, let address, let config):
                pairs += [("router", .string(router)), ("side", .string("server")), ("address", .string(address)),
                          ("requireClientAuth", .bool(config.requireClientAuth))]
            case .client(let router, let config):
                pairs += [("router", .string(router)), ("side", .string("client")), ("disableValidation", .bool(config.disableValidation))]
            }
            pairs.append(("protocols", .array(source.role.protocols.map { .string($0.rawValue) })))
            pairs.append(("files", .array(source.role.files.map { .string($0.path) })))
            pairs.append(("loadedAt", .string(TLSFiles.utc(loaded.loadedAt))))
            pairs.append(("certificate", loaded.own.map(\.json) ?? .null))
            pairs.append(("trusted", .array(loaded.trusted.map(\.json))))
            return .object(pairs)
        })
    }

    /// What a listener puts in front of its codec; nil for a plain one.
    package func transport(router: String, server: ServerConfig) -> (any ListenerTransport)? {
        guard server.tls != nil, let source = servers[Self.key(router, server.address)] else { return nil }
        return ServerTLSTransport(source: source, metrics: metrics, logger: logger)
    }

    /// Plain or TLS connections per client, around `plain`.
    package func upstreams(around plain: any UpstreamProtocol & UpstreamFactory) -> any UpstreamFactory {
        clients.isEmpty ? plain : TLSUpstreamFactory(plain: plain, sources: clients, metrics: metrics, logger: logger)
    }

    /// Every source, listeners first.
    package var sources: [TLSContextSource] {
        servers.keys.sorted().compactMap { servers[$0] } + clients
    }

    /// Starts checking the files once a second, on a thread of the set's own.
    package func watch() {
        let all = sources
        guard !all.isEmpty else { return }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let task = group.next().scheduleRepeatedTask(initialDelay: Self.checkInterval, delay: Self.checkInterval) { _ in
            for source in all { source.reloadIfChanged() }
        }
        reloader.withLockedValue { $0 = (group, task) }
    }

    package func stop() {
        guard let (group, task) = reloader.withLockedValue({ value in defer { value = nil }; return value }) else { return }
        task.cancel()
        group.shutdownGracefully { _ in }
    }
}
