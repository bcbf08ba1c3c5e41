@testable import MeshConfig
@testable import MeshDiscovery
@testable import MeshHTTP1
@testable import MeshRouting
import MeshCore
import MeshTelemetry
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

/// The request path's one feed: an observer on the router hears each attempt start and end and
/// each request complete, in that order, over real sockets (a listener, an upstream, a client).
@Suite struct RequestObserverTests {
    final class Recorder: RequestObserver {
        let events = NIOLockedValueBox<[String]>([])
        let completed = NIOLockedValueBox<Int>(0)

        func attemptStarted(_ attempt: AttemptRecord) {
            events.withLockedValue { $0.append("start #\(attempt.number) \(attempt.endpoint) reused=\(attempt.reusedConnection)") }
        }

        func attemptEnded(_ attempt: AttemptRecord) {
            let took = attempt.ended.map { $0.at >= attempt.startedAt } ?? false
            events.withLockedValue { $0.append("end #\(attempt.number) success=\(attempt.ended?.success.map(String.init) ?? "nil") ordered=\(took)") }
        }

        func requestCompleted(_ record: RequestRecord) {
            events.withLockedValue { $0.append("done \(record.status) attempts=\(record.summary?.attempts ?? -1)") }
            completed.withLockedValue { $0 += 1 }
        }
    }

    /// Answers every request head with a 200 and "ok", on one connection after another.
    final class Upstream: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        private var pending = ""

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            pending += String(buffer: unwrapInboundIn(data))
            while let end = pending.range(of: "\r\n\r\n") {
                pending.removeSubrange(pending.startIndex..<end.upperBound)
                context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")), promise: nil)
            }
        }
    }

    /// Sends its requests one at a time on one connection, each after the previous response
    /// ("ok" body) arrived, and completes with everything received.
    final class Client: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        private var received = ""
        private var requests: [String]
        private let total: Int
        let done: EventLoopPromise<String>

        init(requests: [String], done: EventLoopPromise<String>) {
            self.requests = requests
            self.total = requests.count
            self.done = done
        }

        func channelActive(context: ChannelHandlerContext) {
            sendNext(context: context)
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            received += String(buffer: unwrapInboundIn(data))
            let responses = received.components(separatedBy: "\r\n\r\nok").count - 1
            if responses >= total {
                done.succeed(received)
            } else if responses == total - requests.count {
                sendNext(context: context)
            }
        }

        private func sendNext(context: ChannelHandlerContext) {
            guard !requests.isEmpty else { return }
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: requests.removeFirst())), promise: nil)
        }

        func channelInactive(context: ChannelHandlerContext) {
            done.succeed(received)
        }
    }

    @Test func attemptsAndRequestsReachTheObservers() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let upstream = try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Upstream()) } }
            .bind(host: "127.0.0.1", port: 0)
            .get()
        let port = upstream.localAddress!.port!
        let config = try ConfigLoader.parse("""
            routers:
            - protocol: http
              identifier: {kind: io.l5d.static, path: /app}
              dtab: /svc/app => /$/inet/127.0.0.1/\(port);
              servers: [{port: 0}]
            """, file: "t.yaml")
        let routerConfig = config.routers[0]
        let metrics = MeshMetrics()
        let recorder = Recorder()
        let router = Router(config: routerConfig, namers: NamerSet(configured: []), metrics: metrics, upstreams: HTTP1Upstream(), observers: [recorder])
        let context = ListenerContext(
            router: router, config: routerConfig.servers[0], limits: router.limitsByServer[0],
            metrics: metrics.server(router: "http", server: "test")
        )
        let listener = try await HTTPListener.bind(context: context, group: group)
        // Two requests on one client connection: the second one's attempt reuses the pooled
        // upstream connection.
        let done = group.next().makePromise(of: String.self)
        let requests = ["GET /a HTTP/1.1\r\nHost: x\r\n\r\n", "GET /b HTTP/1.1\r\nHost: x\r\n\r\n"]
        let client = try await ClientBootstrap(group: group)
            .channelInitializer { channel in channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Client(requests: requests, done: done)) } }
            .connect(to: listener.boundAddress!)
            .get()
        let received = try await done.futureResult.get()
        #expect(received.hasPrefix("HTTP/1.1 200") && received.components(separatedBy: "HTTP/1.1 200").count == 3)
        try await client.close()
        #expect(recorder.events.withLockedValue { $0 } == [
            "start #1 127.0.0.1:\(port) reused=false", "end #1 success=true ordered=true", "done 200 attempts=1",
            "start #1 127.0.0.1:\(port) reused=true", "end #1 success=true ordered=true", "done 200 attempts=1",
        ])
        try await listener.channel.close()
        try await upstream.close()
        router.close()
        try await group.shutdownGracefully()
    }
}
