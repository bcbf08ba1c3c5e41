// The end of a pooled connection to an endpoint: passes the response of the exchange currently
// using the connection to that exchange, holds reads back while the client cannot take more,
// and tells the pool when an idle connection dies.

import MeshRouting
import NIOCore
import NIOHTTP1

final class UpstreamHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    /// The exchange using the connection; nil while the connection is idle in the pool.
    private var receiver: UpstreamResponseReceiver?
    private var context: ChannelHandlerContext?
    private var readPending = false
    /// Whether the current response's head said the connection may be reused.
    private var responseKeepAlive = true
    /// The upstream sent more than the responses asked for (bytes past a response's end, or
    /// garbage): the connection must never carry another exchange.
    private var poisoned = false
    /// Whether the connection may carry another exchange after the current response.
    var reusable: Bool { responseKeepAlive && !poisoned }
    /// Whether any part of the current response has arrived.
    private(set) var responseStarted = false
    /// Exchanges this connection has carried, including the current one.
    private(set) var exchanges = 0
    /// Called when the connection closes or fails while idle (no exchange attached).
    var onIdleClose: (() -> Void)?
    /// The responses, parsed from the bytes read (ResponseParser.swift).
    private var parser = ResponseParser()
    /// The request encoder ahead of this handler, and its context, written to directly (not
    /// through the pipeline, which would box every part in `NIOAny` and cast it back out).
    private let encoder: RequestEncoder?
    private var encoderContext: ChannelHandlerContext?

    /// `encoder`: the one placed just before this handler, or nil to write through the pipeline.
    init(encoder: RequestEncoder? = nil) {
        self.encoder = encoder
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if let encoder { encoderContext = try? context.pipeline.syncOperations.context(handler: encoder) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        encoderContext = nil
    }

    var isActive: Bool { context?.channel.isActive ?? false }
    var isWritable: Bool { context?.channel.isWritable ?? false }

    /// Starts an exchange on this connection.
    func attach(_ receiver: UpstreamResponseReceiver) {
        self.receiver = receiver
        responseKeepAlive = true
        responseStarted = false
        exchanges += 1
    }

    /// Ends the exchange; the connection goes back to the pool or closes.
    func detach() {
        receiver = nil
        resumeReading()
    }

    func send(_ part: HTTPClientRequestPart) {
        if case .head(let head) = part { parser.requestSent(head.method) }
        if let encoder, let encoderContext {
            encoder.encode(part, context: encoderContext, promise: nil)
        } else {
            context?.write(wrapOutboundOut(part), promise: nil)
        }
    }

    func flush() {
        context?.flush()
    }

    func close() {
        context?.close(promise: nil)
    }

    /// Lets a held-back read through (the client became writable again).
    func resumeReading() {
        guard readPending, let context else { return }
        readPending = false
        context.read()
    }

    // MARK: inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard receiver != nil else {
            // An idle connection has nothing to say; a response nobody asked for poisons it.
            poisonAndClose(context: context)
            return
        }
        responseStarted = true
        let bytes = unwrapInboundIn(data)
        parse(context: context) { parser, events in try parser.feed(bytes, into: &events) }
    }

    /// Runs one parsing step, then hands what it parsed to the exchange the bytes were read
    /// for. Everything parsed belongs to that exchange or to nobody: once it has its response's
    /// end it may finish and the connection may carry the next exchange at once (a pipelined
    /// request on the same loop), and neither the rest of these bytes nor a parse error in them
    /// may reach that one.
    private func parse(context: ChannelHandlerContext, _ step: (inout ResponseParser, inout [ResponseParser.Event]) throws -> Void) {
        var parsed: [ResponseParser.Event] = []
        parsed.reserveCapacity(4)
        var failure: (any Error)?
        do {
            try step(&parser, &parsed)
        } catch {
            failure = error
        }
        guard let owner = receiver else {
            if !parsed.isEmpty || failure != nil { poisonAndClose(context: context) }
            return
        }
        for (index, event) in parsed.enumerated() {
            guard receiver === owner else {
                // Bytes past the end of the response, which nobody asked for.
                poisonAndClose(context: context)
                return
            }
            switch event {
            case .head(let head, let keepAlive):
                if head.status.code >= 200 || head.status.code == 101 { responseKeepAlive = keepAlive }
                owner.upstreamReceived(head: head)
            case .body(let body):
                owner.upstreamReceived(body: body)
            case .end(let trailers):
                // More after the end (parsed, buffered or broken) means the upstream answered
                // something nobody asked: the connection goes when this exchange is done.
                if index != parsed.count - 1 || failure != nil || parser.hasBufferedBytes { poisoned = true }
                owner.upstreamReceived(end: trailers)
            }
        }
        guard let failure else { return }
        if receiver === owner {
            // A response that is not valid HTTP: its exchange fails (502).
            receiver = nil
            owner.upstreamFailed(failure)
        }
        poisonAndClose(context: context)
    }

    private func poisonAndClose(context: ChannelHandlerContext) {
        poisoned = true
        context.close(promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        receiver?.upstreamReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        // A response read until the connection closes ends here; one cut short fails.
        parse(context: context) { parser, events in try parser.closed(into: &events) }
        if let receiver {
            self.receiver = nil
            receiver.upstreamFailed(UpstreamClosed())
        } else {
            onIdleClose?()
            onIdleClose = nil
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let receiver {
            self.receiver = nil
            receiver.upstreamFailed(error)
        }
        context.close(promise: nil)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        receiver?.upstreamWritabilityChanged(isWritable: context.channel.isWritable)
        context.fireChannelWritabilityChanged()
    }

    // MARK: outbound

    func read(context: ChannelHandlerContext) {
        if let receiver, !receiver.downstreamIsWritable {
            readPending = true
        } else {
            context.read()
        }
    }
}

/// The upstream closed the connection before the response was complete.
struct UpstreamClosed: Error, CustomStringConvertible {
    var description: String { "the upstream closed the connection" }
}
