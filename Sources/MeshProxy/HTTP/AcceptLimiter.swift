// A listener's bound on open client connections (`servers[].maxConnections`), with back-pressure
// instead of refusal: at the limit it stops asking the server socket for more, so new clients
// wait in the kernel's listen backlog until a connection closes. Without it, every accepted
// connection costs a file descriptor and buffers, for as many clients as care to connect.
//
// It sits first on the server channel's pipeline. Connections already accepted in the read
// batch that reached the limit (NIO accepts up to `maxMessagesPerRead` per batch) are held here
// unstarted — not yet handed to the rest of the pipeline — and started as places free up, so
// no more than `limit` are ever active.

import MeshTelemetry
import NIOCore

final class AcceptLimiter: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = any Channel
    typealias InboundOut = any Channel
    typealias OutboundIn = Never

    private let limit: Int
    private let metrics: ServerMetrics
    private var open = 0
    private var held = CircularBuffer<any Channel>()
    private var readPending = false
    private var context: ChannelHandlerContext?

    init(limit: Int, metrics: ServerMetrics) {
        self.limit = limit
        self.metrics = metrics
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let child = unwrapInboundIn(data)
        if open >= limit {
            held.append(child)
            return
        }
        start(child, context: context)
    }

    private func start(_ child: any Channel, context: ChannelHandlerContext) {
        open += 1
        let loop = context.eventLoop
        let limiter = NIOLoopBound(self, eventLoop: loop)
        child.closeFuture.whenComplete { _ in
            loop.execute { limiter.value.connectionClosed() }
        }
        context.fireChannelRead(wrapInboundOut(child))
    }

    private func connectionClosed() {
        open -= 1
        guard let context else { return }
        while open < limit, let next = held.popFirst() {
            start(next, context: context)
        }
        if readPending && open < limit {
            readPending = false
            context.read()
        }
    }

    func read(context: ChannelHandlerContext) {
        if open + held.count >= limit {
            if !readPending { metrics.acceptPauses.increment() }
            readPending = true
        } else {
            context.read()
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        // The listener closed: connections never started go too.
        while let child = held.popFirst() { child.close(promise: nil) }
        context.fireChannelInactive()
    }
}

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
