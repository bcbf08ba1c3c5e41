// `meshd run`: load the config, start the data plane and the admin port, and run until SIGTERM,
// SIGINT or `POST /admin/shutdown`; then drain in-flight requests for up to `shutdownGraceMs`.

import ArgumentParser
import Foundation
import Logging
import MeshAdmin
import MeshConfig
import MeshProxy
import MeshRouting
import MeshTelemetry
import Metrics
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Prometheus
import ServiceLifecycle

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "run", abstract: "Run meshd (the default).")

    @OptionGroup var options: CommonOptions

    @Option(name: .long, help: "Event-loop threads (default: one per core).")
    var threads: Int?

    func validate() throws {
        if let threads, !(1...256).contains(threads) { throw ValidationError("--threads must be 1 to 256") }
    }

    func run() async throws {
        let logger = options.bootstrapLogging()
        let path = options.configPath
        let config: MeshdConfig
        do {
            config = try ConfigLoader.load(path: path)
        } catch {
            FileHandle.standardError.write(Data((error.description + "\n").utf8))
            throw ExitCode(1)
        }
        let fileLimit = FileLimit.raise()
        let connectionLimit = config.routers.flatMap(\.servers).reduce(0) { $0 + $1.maxConnections }
        if let fileLimit, UInt64(connectionLimit) * 2 > fileLimit {
            logger.warning("the open-file limit is below what the listeners' maxConnections need (a client and an upstream connection each)", metadata: [
                LogKeys.fileLimit: "\(fileLimit)", LogKeys.maxConnections: "\(connectionLimit)",
            ])
        }
        let metrics = MeshMetrics(seriesLimit: config.admin.metricSeriesLimit)
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: metrics.registry))
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads ?? System.coreCount)
        // The admin port has a thread of its own, so that it answers (health checks, metrics,
        // shutdown) however busy the data plane's loops are.
        let adminGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        // Everything starts inside the service group, so that SIGTERM and SIGINT are handled
        // gracefully from the first moment listeners exist.
        let service = MeshdService(config: config, path: path, group: group, adminGroup: adminGroup, metrics: metrics, logger: logger)
        let serviceGroup = ServiceGroup(
            configuration: .init(
                services: [.init(service: service, successTerminationBehavior: .gracefullyShutdownGroup)],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger
            )
        )
        do {
            try await serviceGroup.run()
        } catch let error as ConfigErrors {
            FileHandle.standardError.write(Data((error.description + "\n").utf8))
            try? await group.shutdownGracefully()
            try? await adminGroup.shutdownGracefully()
            throw ExitCode(1)
        }
        try await group.shutdownGracefully()
        try await adminGroup.shutdownGracefully()
        logger.info("meshd stopped")
    }
}

/// Lets the admin port ask for a graceful shutdown.
final class ShutdownRequest: Sendable {
    let stream: AsyncStream<Void>
    private let continuation: AsyncStream<Void>.Continuation

    init() {
        (stream, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    func request() {
        continuation.yield()
    }
}

/// The data plane and the admin port, as one lifecycle service: starts them, runs until a
/// shutdown signal or an admin request, then drains.
struct MeshdService: Service {
    let config: MeshdConfig
    let path: String
    let group: MultiThreadedEventLoopGroup
    let adminGroup: MultiThreadedEventLoopGroup
    let metrics: MeshMetrics
    let logger: Logger

    func run() async throws {
        let linker = Linker(config: config, group: group, metrics: metrics, logger: logger)
        let shutdown = ShutdownRequest()
        let adminAddress = NIOLockedValueBox("")
        let routes = AdminRoutes(linker: linker, adminAddress: { adminAddress.withLockedValue { $0 } }) { shutdown.request() }
        let admin = try await AdminServer.start(config: config.admin, routes: routes, group: adminGroup, transport: linker.tls.adminTransport(config.admin))
        adminAddress.withLockedValue { $0 = admin.boundAddress.map(AddressText.describe) ?? "" }
        do {
            try await linker.start()
        } catch {
            await admin.close()
            throw error
        }
        // Start-up is over: the pages of code and data only it touched go back (see StartupPages).
        let released = StartupPages.release()
        logger.info("meshd ready", metadata: [
            LogKeys.version: "\(MeshdVersion.string)", LogKeys.config: "\(path)",
            LogKeys.admin: "\(adminAddress.withLockedValue { $0 })",
            LogKeys.startupPagesReleasedKiB: "\(released / 1024)",
            LogKeys.residentKiB: "\(StartupPages.residentBytes().map { $0 / 1024 } ?? 0)",
        ])
        // Runs until a shutdown signal (graceful shutdown ends the loop) or an admin request.
        for await _ in shutdown.stream.cancelOnGracefulShutdown() {
            logger.info("shutdown requested on the admin port")
            break
        }
        await linker.shutdown(grace: .milliseconds(config.admin.shutdownGraceMs))
        await admin.close()
    }
}
