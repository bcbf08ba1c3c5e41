// The admin HTTP server: a small HTTP/1.1 server on its own listener (default 127.0.0.1:9990),
// answering from `AdminRoutes`.

import Logging
import MeshConfig
import MeshRouting
import MeshTelemetry
import NIOCore
import NIOHTTP1
import NIOPosix

public final class AdminServer: Sendable {
    public let channel: any Channel

    private init(channel: any Channel) {
        self.channel = channel
    }

    public var boundAddress: SocketAddress? { channel.localAddress }

    /// Binds the admin listener. Throws `ConfigErrors` naming `admin` when it cannot bind.
    package static func start(config: AdminConfig, routes: AdminRoutes, group: any EventLoopGroup, transport: (any ListenerTransport)? = nil) async throws -> AdminServer {
        do {
            let channel = try await ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try transport?.configure(channel)
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                        try channel.pipeline.syncOperations.addHandler(AdminHandler(routes: routes))
                    }
                }
                .bind(host: config.ip, port: config.port)
                .get()
            return AdminServer(channel: channel)
        } catch {
            throw ConfigErrors([config.origin.error("cannot listen on admin \(config.ip):\(config.port): \(error)")])
        }
    }

    public func close() async {
        try? await channel.close()
    }
}

final class AdminHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let routes: AdminRoutes
    private var head: HTTPRequestHead?

    init(routes: AdminRoutes) {
        self.routes = routes
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
        case .body:
            break
        case .end:
            guard let head else { return }
            self.head = nil
            let response = routes.respond(method: head.method.rawValue, uri: head.uri)
            var headers = HTTPHeaders()
            headers.add(name: "content-type", value: response.contentType)
            headers.add(name: "content-length", value: String(response.body.utf8.count))
            if !head.isKeepAlive { headers.add(name: "connection", value: "close") }
            let status = HTTPResponseStatus(statusCode: response.status)
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
            if head.method != .HEAD {
                context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: response.body)))), promise: nil)
            }
            let keepAlive = head.isKeepAlive
            let loopBound = context.loopBound
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
                if !keepAlive { loopBound.value.close(promise: nil) }
            }
        }
    }
}
