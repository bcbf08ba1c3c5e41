// First in a client connection's pipeline, ahead of the HTTP/1 decoder.

import NIOCore

/// Tells the client's handler that bytes arrived, before the decoder sees them, so that the
/// clock of a request head (`requestHeadTimeoutMs`) starts at its first byte.
final class RequestBytesObserver: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let handler: ProxyServerHandler

    init(handler: ProxyServerHandler) {
        self.handler = handler
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        handler.bytesArrived()
        context.fireChannelRead(data)
    }
}
