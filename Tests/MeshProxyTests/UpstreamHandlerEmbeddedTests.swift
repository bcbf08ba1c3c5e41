@testable import MeshHTTP1
@testable import MeshProxy
@testable import MeshRouting
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

/// `UpstreamHandler` in an embedded channel, with a recording receiver in place of the exchange:
/// what the upstream sends reaches the exchange it was read for and nobody else, and anything
/// more than that response — extra bytes, garbage, bytes on an idle connection — keeps the
/// connection from carrying another exchange.
@Suite struct UpstreamHandlerEmbeddedTests {
    @Test func aResponseReachesTheReceiverAsHeadBodyAndEnd() throws {
        let (channel, handler) = try connection()
        let receiver = Receiver(handler)
        handler.attach(receiver)
        handler.send(.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/a", headers: ["host": "h"])))
        handler.send(.end(nil))
        handler.flush()
        #expect(try written(channel) == "GET /a HTTP/1.1\r\nhost: h\r\n\r\n")
        #expect(!handler.responseStarted)

        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel"))
        #expect(handler.responseStarted)
        try channel.writeInbound(ByteBuffer(string: "lo"))
        #expect(receiver.events == ["head 200", "body hel", "read complete", "body lo", "end (reusable)"])
        #expect(handler.reusable)
        #expect(handler.exchanges == 1)
        #expect(channel.isActive)
    }

    /// Parts handed to the encoder directly come out as the same bytes as parts sent through
    /// the pipeline, chunked bodies and trailers included.
    @Test func theDirectEncoderPathWritesWhatThePipelineWould() throws {
        var outputs: [String] = []
        for direct in [true, false] {
            let (channel, handler) = try connection(direct: direct)
            handler.attach(Receiver(handler))
            handler.send(.head(HTTPRequestHead(version: .http1_1, method: .POST, uri: "/u", headers: ["host": "h", "transfer-encoding": "chunked"])))
            handler.send(.body(.byteBuffer(ByteBuffer(string: "abc"))))
            handler.send(.end(["x-t": "1"]))
            handler.flush()
            outputs.append(try written(channel))
        }
        #expect(outputs[0] == "POST /u HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nx-t: 1\r\n\r\n")
        #expect(outputs[0] == outputs[1])
    }

    @Test func aChunkedResponseEndsWithItsTrailers() throws {
        let (channel, handler) = try connection()
        let receiver = Receiver(handler)
        handler.attach(receiver)
        handler.send(.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: [:])))
        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n"))
        #expect(receiver.events == ["head 200", "body abc", "end X-T: 1 (reusable)"])
        #expect(handler.reusable)
    }

    /// Interim heads do not decide whether the connection stays; the final one does.
    @Test func theFinalHeadDecidesWhetherTheConnectionIsReusable() throws {
        let (channel, handler) = try connection()
        let receiver = Receiver(handler)
        handler.attach(receiver)
        handler.send(.head(HTTPRequestHead(version: .http1_1, method: .POST, uri: "/", headers: [:])))
        try channel.writeInbound(ByteBuffer(string: "HTTP/1.0 100 Continue\r\nConnection: close\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
        #expect(receiver.events == ["head 100", "head 200", "end (reusable)"])

        let (closing, closingHandler) = try connection()
        let second = Receiver(closingHandler)
        closingHandler.attach(second)
        closingHandler.send(.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: [:])))
        try closing.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
        #expect(second.events == ["head 200", "end (not reusable)"])
        #expect(!closingHandler.reusable)
    }

    // MARK: more than the response

    /// The receiver learns the connection is spoiled before its end is handled, so that the
    /// exchange gives it back as not reusable.
    @Test func bytesAfterTheEndInTheSameReadPoisonTheConnection() throws {
        let (channel, handler) = try connection()
        let receiver = Receiver(handler)
        handler.attach(receiver)
        handler.send(.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: [:])))
        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n"))
        channel.embeddedEventLoop.run()
        #expect(receiver.events == ["head 200", "body ok", "end (not reusable)"])
        #expect(!handler.reusable)
        #expect(!channel.isActive, "garbage closes the connection")
    }

    @Test func aSecondResponseInTheSameReadGoesToNobody() throws {
        let (channel, handler) = try connection()
        let receiver = Receiver(handler)
        handler.attach(receiver)
        // Two requests went out, but the exchange is done after the first response.
        handler.send(.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/1", headers: [:])))
        handler.send(.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/2", headers: [:])))
        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 204 No Content\r\n\r\n"))
        channel.embeddedEventLoop.run()
        #expect(receiver.events == ["head 200", "body ok", "end (not reusable)"])
        #expect(!handler.reusable)
        #expect(!channel.isActive)
    }

    @Test func aPartialHeadAfterTheEndPoisonsTheConnection() throws {
        let (channel, handler) = try connection()
        let receiver = Receiver(handler)
        handler.attach(receiver)
        handler.send(.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/1", headers: [:])))
        handler.send(.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/2", headers: [:])))
        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 2"))
        #expect(receiver.events == ["head 200", "body ok", "end (not reusable)"])
        #expect(!handler.reusable)
    }

    @Test func aReadWithNoReceiverAttachedClosesTheConnection() throws {
        let (channel, handler) = try connection()
        var idleCloses = 0
        handler.onIdleClose = { idleCloses += 1 }
        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
        channel.embeddedEventLoop.run()
        #expect(!channel.isActive)
        #expect(!handler.reusable)
        #expect(idleCloses == 1)
    }

    @Test func bytesArrivingAfterTheExchangeIsDoneCloseTheConnection() throws {
        let (channel, handler) = try connection()
        let receiver = Receiver(handler)
        handler.attach(receiver)
        handler.send(.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: [:])))
        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
        #expect(handler.reusable)
        try channel.writeInbound(ByteBuffer(string: "\r\n"))
        channel.embeddedEventLoop.run()
        #expect(!channel.isActive)
        #expect(!handler.reusable)
        #expect(receiver.events == ["head 200", "body ok", "end (reusable)"])
    }

    // MARK: failures

    @Test func aParseErrorFailsTheExchangeAndClosesTheConnection() throws {
        let (channel, handler) = try connection()
        let receiver = Receiver(handler)
        handler.attach(receiver)
        handler.send(.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: [:])))
        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 abc Broken\r\n\r\n"))
        channel.embeddedEventLoop.run()
        #expect(receiver.events == ["failed"])
        #expect(receiver.failures.first as? HTTPParserError == .invalidStatus)
        #expect(!channel.isActive)
        #expect(!handler.reusable)
    }

    @Test func aParseErrorAfterPartOfTheResponseFailsItOnce() throws {
        let (channel, handler) = try connection()
        let receiver = Receiver(handler)
        handler.attach(receiver)
        handler.send(.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: [:])))
        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n"))
        channel.embeddedEventLoop.run()
        #expect(receiver.events == ["head 200", "body abc", "failed"])
        #expect(receiver.failures.first as? HTTPParserError == .invalidChunkSize)
        #expect(!channel.isActive)
    }

    @Test func aBodyDelimitedByTheCloseEndsAtTheClose() throws {
        let (channel, handler) = try connection()
        let receiver = Receiver(handler)
        handler.attach(receiver)
        handler.send(.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: [:])))
        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\n\r\nuntil close"))
        #expect(!handler.reusable)
        channel.close(promise: nil)
        channel.embeddedEventLoop.run()
        #expect(receiver.events == ["head 200", "body until close", "read complete", "end (not reusable)"])
    }

    @Test func aResponseCutShortByTheCloseFailsTheExchange() throws {
        let (channel, handler) = try connection()
        let receiver = Receiver(handler)
        handler.attach(receiver)
        handler.send(.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: [:])))
        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello"))
        channel.close(promise: nil)
        channel.embeddedEventLoop.run()
        #expect(receiver.events == ["head 200", "body hello", "read complete", "failed"])
        #expect(receiver.failures.first as? HTTPParserError == .invalidEOFState)
    }

    @Test func aCloseBeforeTheResponseFailsTheExchange() throws {
        let (channel, handler) = try connection()
        let receiver = Receiver(handler)
        handler.attach(receiver)
        handler.send(.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: [:])))
        channel.close(promise: nil)
        channel.embeddedEventLoop.run()
        #expect(receiver.failures.count == 1)
        #expect(receiver.failures.first is UpstreamClosed)
    }

    @Test func anErrorCaughtFailsTheExchangeAndClosesTheConnection() throws {
        let (channel, handler) = try connection()
        let receiver = Receiver(handler)
        handler.attach(receiver)
        channel.pipeline.syncOperations.fireErrorCaught(ChannelError.connectTimeout(.seconds(1)))
        channel.embeddedEventLoop.run()
        #expect(receiver.failures.count == 1)
        #expect(!channel.isActive)
    }

    @Test func anIdleConnectionClosingTellsThePoolOnce() throws {
        let (channel, handler) = try connection()
        var idleCloses = 0
        handler.onIdleClose = { idleCloses += 1 }
        channel.close(promise: nil)
        channel.embeddedEventLoop.run()
        #expect(idleCloses == 1)
    }

    // MARK: reads and reuse

    @Test func readsWaitWhileTheClientCannotTakeMore() throws {
        let counter = ReadCounter()
        let (channel, handler) = try connection(before: counter)
        let receiver = Receiver(handler)
        handler.attach(receiver)
        let start = counter.reads
        channel.read()
        #expect(counter.reads == start + 1)
        receiver.writable = false
        channel.read()
        #expect(counter.reads == start + 1, "held back")
        handler.resumeReading()
        #expect(counter.reads == start + 2)
        handler.resumeReading()
        #expect(counter.reads == start + 2, "one held-back read, let through once")
        // A connection going back to the pool reads again.
        channel.read()
        #expect(counter.reads == start + 2)
        handler.detach()
        #expect(counter.reads == start + 3)
    }

    @Test func eachExchangeStartsAfresh() throws {
        let (channel, handler) = try connection()
        for index in 1...3 {
            let receiver = Receiver(handler)
            handler.attach(receiver)
            #expect(handler.exchanges == index)
            #expect(!handler.responseStarted)
            handler.send(.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/\(index)", headers: [:])))
            try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n\(index)"))
            #expect(receiver.events == ["head 200", "body \(index)", "end (reusable)"])
        }
        #expect(channel.isActive)
    }

    // MARK: helpers

    /// A connected channel with the request encoder and the handler, and `before` ahead of them.
    /// A connection set up as the pool sets one up (`HTTP1Upstream`: the handler writes to its
    /// encoder directly), or with `direct: false` an `UpstreamHandler` that writes through the
    /// pipeline.
    func connection(before: (any ChannelHandler)? = nil, direct: Bool = true) throws -> (EmbeddedChannel, UpstreamHandler) {
        let channel = EmbeddedChannel()
        if let before { try channel.pipeline.syncOperations.addHandler(before) }
        if direct {
            try HTTP1Upstream().configure(channel)
        } else {
            try channel.pipeline.syncOperations.addHandlers([RequestEncoder(), UpstreamHandler()])
        }
        let handler = try #require(HTTP1Upstream().connection(of: channel) as? UpstreamHandler)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 80)).wait()
        return (channel, handler)
    }

    func written(_ channel: EmbeddedChannel) throws -> String {
        var bytes: [UInt8] = []
        while let part = try channel.readOutbound(as: IOData.self) {
            if case .byteBuffer(let buffer) = part { bytes += buffer.readableBytesView }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// Stands in for the exchange: records what it is told and, as an exchange does, gives the
/// connection back (detaches) when its response ends, noting whether it was reusable then.
private final class Receiver: UpstreamResponseReceiver {
    let handler: UpstreamHandler
    var events: [String] = []
    var failures: [any Error] = []
    var writable = true

    init(_ handler: UpstreamHandler) {
        self.handler = handler
    }

    func upstreamReceived(head: HTTPResponseHead) { events.append("head \(head.status.code)") }
    func upstreamReceived(body: ByteBuffer) { events.append("body \(String(buffer: body))") }

    func upstreamReceived(end: HTTPHeaders?) {
        let trailers = end.map { " " + $0.map { "\($0.name): \($0.value)" }.joined(separator: ", ") } ?? ""
        events.append("end\(trailers) (\(handler.reusable ? "reusable" : "not reusable"))")
        handler.detach()
    }

    func upstreamReadComplete() { events.append("read complete") }

    func upstreamFailed(_ error: any Error) {
        events.append("failed")
        failures.append(error)
    }

    func upstreamWritabilityChanged(isWritable: Bool) { events.append("writable \(isWritable)") }
    var downstreamIsWritable: Bool { writable }
}

/// Counts the reads that get past the handlers after it.
private final class ReadCounter: ChannelOutboundHandler {
    typealias OutboundIn = Any
    var reads = 0

    func read(context: ChannelHandlerContext) {
        reads += 1
        context.read()
    }
}
