// A router's listener: accepts connections (at most `maxConnections` at once, AcceptLimiter.swift)
// and gives each an HTTP/1.1 codec (NIO's decoder, meshd's encoder) and a `ProxyServerHandler`
// (which handles pipelining and the request-head timeout itself). Shutting down
// stops accepting and tells every connection to quiesce: `ProxyServerHandler` closes idle ones
// at once and busy ones after their response.

import MeshConfig
import MeshRouting
import NIOCore
import NIOExtras
import NIOHTTP1
import NIOPosix

package final class HTTPListener: Sendable {
    package let context: ListenerContext
    package let channel: any Channel
    private let quiescing: ServerQuiescingHelper

    private init(context: ListenerContext, channel: any Channel, quiescing: ServerQuiescingHelper) {
        self.context = context
        self.channel = channel
        self.quiescing = quiescing
    }

    /// The address actually bound (the port is chosen by the system for port 0).
    package var boundAddress: SocketAddress? { channel.localAddress }

    package static func bind(context: ListenerContext, group: any EventLoopGroup) async throws -> HTTPListener {
        let quiescing = ServerQuiescingHelper(group: group)
        var decoderLimits = NIOHTTPDecoderLimitConfiguration()
        // Exact limits are checked on the decoded head (414 vs 431); these only bound memory.
        decoderLimits.maxHeaderFieldSize = 64 * 1024
        decoderLimits.maxHeaderListSize = 64 * 1024 + context.limits.maxHeaderBytes
        let limits = decoderLimits
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    // The limiter first, so that quiescing only ever sees connections it started.
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(AcceptLimiter(limit: context.config.maxConnections, metrics: context.metrics))
                    try sync.addHandler(quiescing.makeServerChannelHandler(channel: channel))
                }
            }
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    // NIO's request decoder, meshd's own response encoder (HeadEncoders.swift), and
                    // no pipelining helper: ProxyServerHandler queues pipelined requests itself.
                    let encoder = ResponseEncoder()
                    let handler = ProxyServerHandler(listener: context, encoder: encoder)
                    let sync = channel.pipeline.syncOperations
                    // TLS first: everything after it sees the decrypted bytes.
                    try context.transport?.configure(channel)
                    try sync.addHandler(RequestBytesObserver(handler: handler))
                    try sync.addHandler(encoder)
                    try sync.addHandler(ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes, limitConfiguration: limits)))
                    try sync.addHandler(handler)
                }
            }
            .bind(host: context.config.ip, port: context.config.port)
            .get()
        return HTTPListener(context: context, channel: channel, quiescing: quiescing)
    }

    /// Stops accepting; completes when every connection has closed.
    package func quiesce() -> EventLoopFuture<Void> {
        let promise = channel.eventLoop.makePromise(of: Void.self)
        quiescing.initiateShutdown(promise: promise)
        return promise.futureResult
    }
}
