@testable import MeshHTTP1
@testable import MeshProxy
@testable import MeshRouting
import MeshCore
import MeshTelemetry
import NIOCore
import NIOPosix
import Testing

/// The pool against a real listener on 127.0.0.1.
@Suite struct EndpointPoolTests {
    /// A TCP server that accepts and reads whatever comes.
    static func listener(on group: any EventLoopGroup) async throws -> any Channel {
        try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in channel.eventLoop.makeSucceededVoidFuture() }
            .bind(host: "127.0.0.1", port: 0)
            .get()
    }

    static func pool(port: Int, idleTime: TimeAmount) throws -> EndpointPool {
        try EndpointPool(
            endpoint: Endpoint(host: "127.0.0.1", port: port),
            upstream: HTTP1Upstream(),
            limits: .init(minSize: 0, maxSize: 4, maxWaiters: 4),
            idleTime: idleTime, connectTimeout: .seconds(5),
            metrics: MeshMetrics().pool(router: "test", client: "/c", endpoint: "127.0.0.1:\(port)")
        )
    }

    static func lease(_ pool: EndpointPool, on loop: any EventLoop) async throws -> PooledConnection {
        switch pool.lease(on: loop) {
        case .ready(let connection): return connection
        case .pending(_, let future): return try await future.get()
        }
    }

    /// Every return to idle asked for a timer; one was scheduled per request and never
    /// cancelled (about rps × idleTime live tasks). Now a connection has one at a time.
    @Test func reuseKeepsOneIdleTimerPerConnection() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let server = try await Self.listener(on: group)
        let pool = try Self.pool(port: server.localAddress!.port!, idleTime: .seconds(600))
        let loop = group.next()
        let first = try await Self.lease(pool, on: loop)
        pool.release(first, reusable: true)
        for _ in 0..<10_000 {
            let connection = try await Self.lease(pool, on: loop)
            #expect(connection === first)
            pool.release(connection, reusable: true)
        }
        #expect(pool.scheduledIdleTimers == 1)
        #expect(pool.snapshot.open == 1)
        pool.drain()
        #expect(pool.scheduledIdleTimers == 0)
        try await server.close()
        try await group.shutdownGracefully()
    }

    /// The one timer still closes the connection `idleTime` after its last use, not earlier.
    @Test func anIdleConnectionClosesAfterItsLastUse() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let server = try await Self.listener(on: group)
        let idle = TimeAmount.milliseconds(300)
        let pool = try Self.pool(port: server.localAddress!.port!, idleTime: idle)
        let loop = group.next()
        let connection = try await Self.lease(pool, on: loop)
        pool.release(connection, reusable: true)
        // Used again before the first timer is due: that timer must run again, not close it.
        try await Task.sleep(for: .milliseconds(150))
        let again = try await Self.lease(pool, on: loop)
        #expect(again === connection)
        pool.release(again, reusable: true)
        let lastUse = NIODeadline.now()
        try await connection.channel.closeFuture.get()
        #expect(NIODeadline.now() - lastUse >= idle, "closed before idleTime had passed since the last use")
        #expect(pool.snapshot.open == 0)
        #expect(pool.scheduledIdleTimers == 0)
        try await server.close()
        try await group.shutdownGracefully()
    }
}
