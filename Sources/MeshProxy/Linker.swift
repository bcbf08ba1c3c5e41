// The data plane built from one config: namers and their watchers, routers, and their listeners.
// `start()` reads discovery once and binds every listener (a port in use is a config error that
// names the server's line); `shutdown(grace:)` stops accepting, lets in-flight requests finish
// for up to the grace period, and closes what is left.

import Foundation
import Logging
import MeshConfig
import MeshCore
import MeshDiscovery
import MeshHTTP1
import MeshRouting
import MeshTLS
import MeshTelemetry
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
#if canImport(Glibc)
import Glibc
#endif

public final class Linker: Sendable {
    public let config: MeshdConfig
    public let metrics: MeshMetrics
    public let routers: [Router]
    public let namers: NamerSet
    /// The `io.l5d.recentRequests` sample, when configured.
    public let recentRequests: RecentRequests?
    private let fsNamers: [FsNamer]
    private let watchers: [DirectoryWatcher]
    private let group: any EventLoopGroup
    private let logger: Logger
    private let listeners = NIOLockedValueBox<[HTTPListener]>([])
    private let ready = NIOLockedValueBox(false)
    private let dtabWatchers: [DirectoryWatcher]
    private let sweeper = NIOLockedValueBox<RepeatedTask?>(nil)
    /// Every TLS context the config asks for, and what could not be loaded.
    package let tls: TLSSet
    private let tlsErrors: [ConfigError]

    public init(config: MeshdConfig, group: any EventLoopGroup, metrics: MeshMetrics, logger: Logger) {
        self.config = config
        self.group = group
        self.metrics = metrics
        self.logger = logger
        var fsNamers: [FsNamer] = []
        var watchers: [DirectoryWatcher] = []
        var namers: [any Namer] = []
        for namerConfig in config.namers {
            switch namerConfig {
            case .fs(let fs):
                let namer = FsNamer(prefix: fs.prefix, rootDir: fs.rootDir, logger: logger, metrics: metrics.discovery)
                fsNamers.append(namer)
                namers.append(namer)
                watchers.append(DirectoryWatcher(directory: fs.rootDir, logger: logger) { namer.rescan() })
            }
        }
        self.fsNamers = fsNamers
        self.watchers = watchers
        let namerSet = NamerSet(configured: namers)
        self.namers = namerSet
        var recent: RecentRequests?
        for case .recentRequests(let rate, let capacity) in config.telemetry {
            recent = RecentRequests(sampleRate: rate, capacity: capacity)
        }
        self.recentRequests = recent
        (tls, tlsErrors) = TLSSet.load(config, metrics: metrics.tls, logger: logger)
        let upstreams = tls.upstreams(around: HTTP1Upstream())
        let routers = config.routers.map { Router(config: $0, namers: namerSet, metrics: metrics, upstreams: upstreams, recentRequests: recent, logger: logger) }
        self.routers = routers
        var dtabWatchers: [DirectoryWatcher] = []
        for router in routers {
            guard case .fs(let file, _) = router.config.interpreter.kind else { continue }
            let directory = (file as NSString).deletingLastPathComponent
            dtabWatchers.append(DirectoryWatcher(directory: directory.isEmpty ? "." : directory, logger: logger) {
                Linker.reloadDtabFile(file, for: router, logger: logger)
            })
        }
        self.dtabWatchers = dtabWatchers
    }

    /// Whether listeners are bound and discovery has answered once.
    public var isReady: Bool { ready.withLockedValue { $0 } }

    /// The bound listen addresses, by router label (ports chosen by the system show here).
    public var listenAddresses: [(router: String, address: String)] {
        listeners.withLockedValue { listeners in
            listeners.compactMap { listener in listener.boundAddress.map { (listener.context.router.label, AddressText.describe($0)) } }
        }
    }

    /// Reads every file-system namer's directory once, without watching (for `meshd delegate`).
    public func readDiscoveryOnce() {
        for namer in fsNamers { namer.rescan() }
    }

    /// Reads discovery, binds every listener. Throws `ConfigErrors` for listeners that cannot bind.
    public func start() async throws {
        // A certificate or key that cannot be used is a config error at its key, before anything binds.
        if !tlsErrors.isEmpty { throw ConfigErrors(tlsErrors) }
        tls.watch()
        for namer in fsNamers { namer.rescan() }
        for watcher in watchers + dtabWatchers { watcher.start() }
        let routers = self.routers
        let task = group.next().scheduleRepeatedTask(initialDelay: .seconds(10), delay: .seconds(10)) { _ in
            let now = NIODeadline.now().uptimeNanoseconds
            for router in routers { router.closeIdleClients(now: now) }
        }
        sweeper.withLockedValue { $0 = task }
        var bound: [HTTPListener] = []
        var errors: [ConfigError] = []
        for router in routers {
            for (index, server) in router.config.servers.enumerated() {
                let context = ListenerContext(
                    router: router, config: server, limits: router.limitsByServer[index],
                    metrics: metrics.server(router: router.label, server: server.address),
                    transport: tls.transport(router: router.label, server: server)
                )
                do {
                    let listener = try await HTTPListener.bind(context: context, group: group)
                    bound.append(listener)
                    logger.info("listening", metadata: [LogKeys.router: "\(router.label)", LogKeys.address: "\(listener.boundAddress.map(AddressText.describe) ?? server.address)"])
                } catch {
                    errors.append(server.origin.error("cannot listen on \(server.address): \(BindErrorText.describe(error))"))
                }
            }
        }
        listeners.withLockedValue { $0 = bound }
        if !errors.isEmpty {
            await closeListeners()
            throw ConfigErrors(errors)
        }
        ready.withLockedValue { $0 = true }
    }

    /// Stops accepting, waits up to `grace` for in-flight requests, then closes everything.
    public func shutdown(grace: Duration) async {
        ready.withLockedValue { $0 = false }
        let all = listeners.withLockedValue { $0 }
        let inFlight = all.reduce(0) { $0 + $1.context.requestsInFlight }
        logger.info("draining", metadata: [LogKeys.inFlight: "\(inFlight)", LogKeys.graceMs: "\(grace.components.seconds * 1000 + grace.components.attoseconds / 1_000_000_000_000_000)"])
        // Wait for every listener's connections to finish, or for the grace period, whichever
        // comes first; then close whatever is left.
        let loop = group.next()
        let done = loop.makePromise(of: Void.self)
        let quiesced = EventLoopFuture.andAllComplete(all.map { $0.quiesce() }, on: loop)
        let timer = loop.scheduleTask(in: .nanoseconds(Int64(grace.components.seconds) * 1_000_000_000 + grace.components.attoseconds / 1_000_000_000)) {
            done.succeed()
        }
        quiesced.whenComplete { _ in
            timer.cancel()
            done.succeed()
        }
        try? await done.futureResult.get()
        // Past the grace period: cut the connections still open, so quiescing completes.
        for listener in all { listener.context.closeAllConnections() }
        try? await quiesced.get()
        await closeListeners()
        for watcher in watchers + dtabWatchers { watcher.stop() }
        sweeper.withLockedValue { $0?.cancel(); $0 = nil }
        tls.stop()
        for router in routers { router.close() }
    }

    /// The io.l5d.fs interpreter's file may have changed: route with its new dtab, or keep the
    /// last good one. A broken file is reported once per change, not on every rescan.
    static func reloadDtabFile(_ file: String, for router: Router, logger: Logger) {
        let result = DtabFile.load(file)
        let fingerprint = "\(result)"
        guard router.dtabFileFingerprint.withLockedValue({ last in
            defer { last = fingerprint }
            return last != fingerprint
        }) else { return }
        switch result {
        case .success(let dtab):
            if dtab + router.config.dtab != router.dtab.value {
                router.fileDtabChanged(dtab)
                logger.info("dtab file read", metadata: [LogKeys.router: "\(router.label)", LogKeys.file: "\(file)"])
            }
        case .failure(let problem):
            router.meshMetrics.discovery.errors(namer: "io.l5d.fs.interpreter", name: router.label, kind: "dtab_unreadable").increment()
            logger.error("cannot use the dtab file; keeping the last good dtab", metadata: [
                LogKeys.router: "\(router.label)", LogKeys.file: "\(file)", LogKeys.error: "\(problem)",
            ])
        }
    }

    private func closeListeners() async {
        let all = listeners.withLockedValue { listeners -> [HTTPListener] in
            defer { listeners = [] }
            return listeners
        }
        for listener in all { try? await listener.channel.close() }
    }

    /// What the namers know, for the admin port.
    public func namerStates() -> [NamerState] {
        namers.configured.map { $0.state() }
    }
}
