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

package final class AcceptLimiter: ChannelDuplexHandler, RemovableChannelHandler {
    package typealias InboundIn = any Channel
    package typealias InboundOut = any Channel
    package typealias OutboundIn = Never

    private let limit: Int
    private let metrics: ServerMetrics
    private var open = 0
    private var held = CircularBuffer<any Channel>()
    private var readPending = false
    private var context: ChannelHandlerContext?

    package init(limit: Int, metrics: ServerMetrics) {
        self.limit = limit
        self.metrics = metrics
    }

    package func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    package func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
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

    package func read(context: ChannelHandlerContext) {
        if open + held.count >= limit {
            if !readPending { metrics.acceptPauses.increment() }
            readPending = true
        } else {
            context.read()
        }
    }

    package func channelInactive(context: ChannelHandlerContext) {
        // The listener closed: connections never started go too.
        while let child = held.popFirst() { child.close(promise: nil) }
        context.fireChannelInactive()
    }
}
