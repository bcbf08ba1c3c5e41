// The client side of every proxied request. One handler per accepted connection, after NIO's
// HTTP/1.1 decoder. Requests are handled one at a time, in order: parts of requests a client
// pipelines behind the current one wait in a queue until its response is done. (NIO's own
// pipelining handler does the same by pausing reads after every request, which costs two
// epoll_ctl calls a request; meshd keeps reading and only pauses when the queue grows large.)
//
// For each request: check the head (framing, limits, loops), name it (identifiers), route it
// (dtab, namers, client, balancer) and hand it to an `Exchange`, which streams it to a pooled
// upstream connection and the response back. Requests meshd cannot route get a response of its
// own with `l5d-err`. Reads from the client pause while the upstream cannot take more, and flushes
// happen once per read batch.

import MeshCore
import MeshDiscovery
import MeshRouting
import MeshTelemetry
import NIOCore
import NIOHTTP1

final class ProxyServerHandler: ChannelDuplexHandler, RemovableChannelHandler, Downstream {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    let listener: ListenerContext
    /// Told the method of every request head read, so that HEAD responses go out without a body.
    private let encoder: ResponseEncoder
    /// The encoder's context: response parts are handed to the encoder directly, not boxed in
    /// `NIOAny` and cast back out by the pipeline (HeadEncoders.swift). Nil when the encoder is
    /// not in this pipeline; parts then go through it.
    private var encoderContext: ChannelHandlerContext?
    /// The client's certificate identity (TLS listeners), read at the first request.
    private var peer: PeerIdentity?
    private var peerRead = false
    var random: SplitMix64
    private(set) var context: ChannelHandlerContext?
    private var exchange: Exchange?
    /// The exchange holding one of the listener's `maxConcurrentRequests` slots.
    private var slotHolder: ObjectIdentifier?
    /// The response being written: the client's version and method, whether the connection may
    /// carry another request after it, and the listener's `clearContext`.
    private var response: (version: HTTPVersion, method: HTTPMethod, keepAlive: Bool, clearContext: Bool) = (.http1_1, .GET, true, false)
    private let dispatcher: RequestDispatcher
    /// Dropping the rest of a request that was already answered.
    private var discarding = false
    private var readPending = false
    /// The connection closes after the current response.
    private(set) var closing = false
    /// `serverSession.idleTimeMs`: when the connection closes if no request comes (nil while
    /// a request is in progress).
    private var idleDeadline: NIODeadline?
    /// `requestHeadTimeoutMs`: when the awaited request head must have arrived whole.
    private var headDeadline: NIODeadline?
    /// One timer for both deadlines, scheduled lazily: it may fire early (a deadline moved on
    /// since), and then is set again for what is left. Scheduling and cancelling a timer per
    /// request for each of them was 13 % of a proxied request's instructions.
    private var timer: Scheduled<Void>?
    private var timerAt: NIODeadline?
    /// `serverSession.lifeTimeMs`: ends the connection once it is this old.
    private var lifeTimer: Scheduled<Void>?
    /// Between requests, as the decoder reads them: the next thing to arrive starts a head.
    private var awaitingHead = true
    /// Bytes of the awaited head have arrived (so a timeout answers 408 instead of closing quietly).
    private var headStarted = false

    /// What waits behind the current request: parts of pipelined requests, and the point where
    /// the client's byte stream turned out malformed.
    private enum Queued {
        case part(HTTPServerRequestPart)
        case malformed(ProxyError)
    }

    /// Parts of pipelined requests waiting for the current response, and their body bytes.
    private var queued = CircularBuffer<Queued>()
    private var queuedBytes = 0
    /// The decoder failed on the client's bytes: nothing more is read from this connection.
    private var streamBroken = false
    private var drainingQueue = false
    /// Past this much queued (body bytes, and 1 KiB counted for every head), reads pause.
    private static let maxQueuedBytes = 64 * 1024

    init(listener: ListenerContext, encoder: ResponseEncoder) {
        self.listener = listener
        self.dispatcher = RequestDispatcher(listener: listener)
        self.encoder = encoder
        var seed = SystemRandomNumberGenerator()
        self.random = SplitMix64(seed: seed.next())
    }

    // MARK: lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        encoderContext = try? context.pipeline.syncOperations.context(handler: encoder)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        encoderContext = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        listener.metrics.connections.increment()
        listener.metrics.connectionsOpen.increment()
        listener.connectionOpened(context.channel)
        if let lifeTime = listener.config.serverSession.lifeTimeMs {
            // Past its lifetime the connection ends: at once when idle, else after the response.
            lifeTimer = context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(lifeTime))) { [self] in
                closing = true
                if exchange == nil && !discarding { closeAfterWrites() }
            }
        }
        armIdleTimer()
        // The first request head is due from the start (HAProxy's `timeout http-request`).
        armHeadTimer(context: context)
        context.fireChannelActive()
    }

    /// Bytes arrived from the client (told by `RequestBytesObserver`, before the decoder): the
    /// first ones of a head start its clock.
    func bytesArrived() {
        guard awaitingHead, let context else { return }
        headStarted = true
        if headDeadline == nil { armHeadTimer(context: context) }
    }

    private func armHeadTimer(context: ChannelHandlerContext) {
        headDeadline = NIODeadline.now() + .milliseconds(Int64(listener.config.requestHeadTimeoutMs))
        updateTimer()
    }

    /// Keeps the one timer at or before the earliest deadline, and never more than a head
    /// timeout ahead, so that the next request's head deadline needs no earlier timer.
    private func updateTimer() {
        guard let context else { return }
        let wanted: NIODeadline
        switch (headDeadline, idleDeadline) {
        case (let head?, let idle?): wanted = min(head, idle)
        case (let head?, nil): wanted = head
        case (nil, let idle?): wanted = idle
        case (nil, nil): return  // a timer still scheduled fires and finds nothing due
        }
        if let at = timerAt, at <= wanted { return }
        timer?.cancel()
        let at = min(wanted, NIODeadline.now() + .milliseconds(Int64(listener.config.requestHeadTimeoutMs)))
        timerAt = at
        timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: at) { [self] in
            timer = nil
            timerAt = nil
            timerFired()
        }
    }

    private func timerFired() {
        let now = NIODeadline.now()
        if let head = headDeadline, head <= now {
            headDeadline = nil
            headTimedOut(after: listener.config.requestHeadTimeoutMs)
            if closing { return }
        }
        if let idle = idleDeadline, idle <= now {
            idleDeadline = nil
            // Idle, or still dropping the body of a request already answered: a client that
            // sends no more of it within the idle time does not keep the connection.
            if exchange == nil {
                closing = true
                closeAfterWrites()
                return
            }
        }
        updateTimer()
    }

    /// The request head did not arrive in time: a slow (or slowloris) client. Part of a head
    /// gets 408; a connection that sent nothing is closed quietly (as HAProxy does for
    /// pre-connects).
    private func headTimedOut(after timeout: Int) {
        guard awaitingHead, let context else { return }
        listener.metrics.headTimeouts.increment()
        // Nothing more is read; the connection ends.
        streamBroken = true
        let error = ProxyError(.requestHeadTimeout, "the request head did not arrive within requestHeadTimeoutMs (\(timeout) ms)")
        if exchange != nil || !queued.isEmpty {
            // A pipelined head stalled behind a response in progress: the requests before it
            // get their responses, then this one its 408, in its turn.
            queued.append(.malformed(error))
            return
        }
        closing = true
        guard headStarted else {
            context.close(promise: nil)
            return
        }
        discarding = true
        answerUnread(error)
    }

    /// Answers a request whose head could not be read (malformed, or too slow); the connection
    /// closes after the answer.
    private func answerUnread(_ error: ProxyError) {
        let router = listener.router
        let start = NIODeadline.now().uptimeNanoseconds
        router.metrics.requests.increment()
        respond(error, version: .http1_1, keepAlive: false)
        let record = RequestRecord(router: router, request: nil, startedAt: start, endedAt: NIODeadline.now().uptimeNanoseconds, status: Int(error.status.code), error: error)
        router.requestCompleted(record, random: &random)
    }

    /// Closes the connection after `serverSession.idleTimeMs` without a request.
    private func armIdleTimer() {
        guard let idleTime = listener.config.serverSession.idleTimeMs, let context, context.channel.isActive else { return }
        idleDeadline = NIODeadline.now() + .milliseconds(Int64(idleTime))
        updateTimer()
    }

    /// How long a closing connection may take to write out what it has already answered.
    static let flushGrace = TimeAmount.seconds(10)

    /// Closes once everything written so far has gone out — the end of a response a slow client
    /// is still reading is not cut — or after `flushGrace` at the latest.
    private func closeAfterWrites() {
        guard let context else { return }
        guard let encoderContext else {
            context.close(promise: nil)
            return
        }
        let loopBound = context.loopBound
        let written = context.eventLoop.makePromise(of: Void.self)
        let cutOff = context.eventLoop.assumeIsolated().scheduleTask(in: Self.flushGrace) {
            loopBound.value.close(promise: nil)
        }
        written.futureResult.whenComplete { _ in
            cutOff.cancel()
            loopBound.value.close(promise: nil)
        }
        // An empty write completes after every write before it.
        encoderContext.writeAndFlush(NIOAny(IOData.byteBuffer(ByteBuffer())), promise: written)
    }

    func channelInactive(context: ChannelHandlerContext) {
        // The client is gone: nothing queued may be started for it (a pipelined POST would be
        // sent upstream for nobody), and nothing may be read or timed any more. This comes
        // first, because ending the exchange below drains the queue and re-arms timers.
        closing = true
        streamBroken = true
        queued.removeAll()
        queuedBytes = 0
        listener.metrics.connectionsOpen.decrement()
        listener.connectionClosed(context.channel)
        exchange?.downstreamClosed()
        exchange = nil
        timer?.cancel()
        lifeTimer?.cancel()
        timer = nil
        timerAt = nil
        idleDeadline = nil
        headDeadline = nil
        lifeTimer = nil
        context.fireChannelInactive()
    }

    // MARK: inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        switch part {
        case .head(let head):
            encoder.recordRequestMethod(head.method)
            awaitingHead = false
            headStarted = false
            headDeadline = nil
        case .end:
            awaitingHead = true
        case .body:
            break
        }
        // The current request has fully arrived and its response is not done: what comes now
        // belongs to the next request, which waits its turn.
        if !queued.isEmpty || exchange?.requestEnded == true {
            guard !closing else { return }
            queuedBytes += Self.queuedCost(part)
            queued.append(.part(part))
            return
        }
        dispatch(part, context: context)
    }

    private func dispatch(_ part: HTTPServerRequestPart, context: ChannelHandlerContext) {
        switch part {
        case .head(let head):
            startRequest(head, context: context)
        case .body(let body):
            exchange?.requestBody(body)
        case .end(let trailers):
            if let exchange {
                exchange.requestEnd(trailers)
            } else {
                discarding = false
                // Answered already; a connection marked to close meanwhile (lifetime, shutdown) closes now.
                if closing { context.close(promise: nil) } else { armIdleTimer() }
            }
        }
    }

    /// Serves queued pipelined requests, in order, until one is waiting for its response.
    private func drainQueue() {
        guard !drainingQueue, let context else { return }
        drainingQueue = true
        defer { drainingQueue = false }
        while !queued.isEmpty, exchange?.requestEnded != true {
            if closing {
                queued.removeAll()
                queuedBytes = 0
                break
            }
            switch queued.removeFirst() {
            case .part(let part):
                queuedBytes -= Self.queuedCost(part)
                dispatch(part, context: context)
            case .malformed(let error):
                malformed(error, context: context)
            }
        }
    }

    /// What a queued part counts against `maxQueuedBytes`: its body bytes, or 1 KiB for a head,
    /// so that many small pipelined requests pause reads too.
    private static func queuedCost(_ part: HTTPServerRequestPart) -> Int {
        switch part {
        case .head: return 1024
        case .body(let body): return body.readableBytes
        case .end: return 0
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            // Shutting down: idle connections close now, busy ones after the current response.
            closing = true
            if exchange == nil { closeAfterWrites() }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        exchange?.flushUpstream()
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            exchange?.downstreamBecameWritable()
            resumeReads()
        }
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if streamBroken, error is ByteToMessageDecoderError || error is HTTPParserError {
            // The stream broke already and that is answered (or queued to be): later complaints
            // of the decoder (bytes read before reads stopped, the end of the stream) add nothing.
            return
        }
        guard error is HTTPParserError else {
            // A socket error (reset by the client): nobody is left to answer.
            closing = true
            context.close(promise: nil)
            return
        }
        // A decoder error: the byte stream cannot be trusted from here on. Requests before it
        // are whole and valid, so a request already read and waiting for its response gets that
        // response (and queued ones theirs); the malformed one is answered in its turn.
        let proxyError = DecoderErrorText.proxyError(for: error)
        streamBroken = true
        if !queued.isEmpty || exchange?.requestEnded == true {
            queued.append(.malformed(proxyError))
            return
        }
        malformed(proxyError, context: context)
    }

    /// The request now being read is malformed: answered 400 (unless its answer has begun),
    /// then the connection closes.
    private func malformed(_ error: ProxyError, context: ChannelHandlerContext) {
        closing = true
        if let exchange {
            self.exchange = nil
            // Answered: the connection closes once the answer is written (`endResponse`).
            if exchange.abort(respondingWith: error) { return }
        } else if !discarding {
            answerUnread(error)
            return
        }
        context.close(promise: nil)
    }

    // MARK: outbound

    func read(context: ChannelHandlerContext) {
        // Between exchanges, answers meshd makes itself (refusals, fast errors) pile up for a
        // client that sends and never reads: reads wait until the client takes them.
        let unreadAnswers = exchange == nil && !context.channel.isWritable
        if streamBroken || exchange?.holdsClientReads == true || queuedBytes > Self.maxQueuedBytes || unreadAnswers {
            readPending = true
        } else {
            context.read()
        }
    }

    /// Lets a held read through, unless something still holds it.
    func resumeReads() {
        guard readPending, let context else { return }
        readPending = false
        read(context: context)
    }

    // MARK: requests

    private func startRequest(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        let start = NIODeadline.now().uptimeNanoseconds
        idleDeadline = nil
        if !peerRead, let transport = listener.transport {
            // The handshake is done by the first request: who the client is, once per connection.
            peerRead = true
            peer = transport.peer(of: context.channel)
        }
        switch dispatcher.dispatch(head, start: start, random: &random, peer: peer) {
        case .rejected(let error, let closeConnection, let holdsSlot):
            if closeConnection { closing = true }
            reject(error, head: head, start: start, counted: holdsSlot)
        case .routed(let request):
            if request.closeAfter { closing = true }
            response = (head.version, head.method, head.isKeepAlive, request.clearContext)
            let exchange = Exchange(request, downstream: self)
            self.exchange = exchange
            slotHolder = ObjectIdentifier(exchange)
            exchange.start()
        }
    }

    /// Answers a request meshd will not forward, and drops its body.
    private func reject(_ error: ProxyError, head: HTTPRequestHead, start: UInt64, counted: Bool) {
        if counted { listener.requestFinished() }
        // A client waiting for 100 Continue will not send its body: close instead of waiting for it.
        if head.headers.contains(name: "expect"), Exchange.expectsContinue(head) { closing = true }
        discarding = true
        respond(error, version: head.version, keepAlive: head.isKeepAlive && !closing)
        // Its body, if it has one, must come within the idle time.
        if !closing { armIdleTimer() }
        let router = listener.router
        let record = RequestRecord(router: router, request: head, startedAt: start, endedAt: NIODeadline.now().uptimeNanoseconds, status: Int(error.status.code), error: error)
        router.requestCompleted(record, random: &random)
    }

    /// Writes a response made by meshd: status, `l5d-err`, and the reason as a one-line body.
    func respond(_ error: ProxyError, version: HTTPVersion, keepAlive: Bool) {
        guard let context else { return }
        let body = error.message + "\n"
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "text/plain; charset=utf-8")
        headers.add(name: "content-length", value: String(body.utf8.count))
        headers.add(name: "l5d-err", value: error.headerValue)
        headers.add(name: "l5d-success-class", value: "0.0")
        if error.retryable { headers.add(name: "l5d-retryable", value: "true") }
        headers.add(name: "via", value: HeaderRules.viaToken)
        if !keepAlive {
            closing = true
            headers.add(name: "connection", value: "close")
        }
        let head = HTTPResponseHead(version: version.minor == 0 ? .http1_0 : .http1_1, status: error.status, headers: headers)
        write(.head(head))
        write(.body(.byteBuffer(context.channel.allocator.buffer(string: body))))
        endResponse(context: context)
    }

    // MARK: Downstream (used by the exchange)

    var eventLoop: any EventLoop { context!.eventLoop }

    func forwardInformational(_ head: HTTPResponseHead) {
        // 100 Continue and friends go to HTTP/1.1 clients only.
        guard response.version.minor >= 1 else { return }
        write(.head(MessageRewriting.informationalResponse(from: head)))
    }

    func forwardHead(_ head: HTTPResponseHead, responseClass: ResponseClass, clientMayStillSendBody: Bool) {
        if response.version.minor == 0 {
            // HTTP/1.0 has no chunked framing: a body of unknown length ends with the connection.
            let framedByLength = head.headers.contains(name: "content-length") || !head.status.mayHaveResponseBody || response.method == .HEAD
            if !framedByLength { response.keepAlive = false }
        }
        if closing || clientMayStillSendBody { response.keepAlive = false }
        let rewritten = MessageRewriting.downstreamResponse(
            from: head, clientVersion: response.version, keepAlive: response.keepAlive, clearContext: response.clearContext, responseClass: responseClass
        )
        write(.head(rewritten))
    }

    func forwardBody(_ body: ByteBuffer) {
        write(.body(.byteBuffer(body)))
    }

    func endResponse(trailers: HTTPHeaders?) {
        guard let context else { return }
        if !response.keepAlive { closing = true }
        endResponse(context: context, trailers: trailers)
    }

    func respond(_ error: ProxyError, clientMayStillSendBody: Bool) {
        if clientMayStillSendBody { response.keepAlive = false }
        respond(error, version: response.version, keepAlive: response.keepAlive && !closing)
    }

    /// Breaks the connection: the response cannot be completed properly.
    func abort() {
        closing = true
        context?.close(promise: nil)
    }

    private func write(_ part: HTTPServerResponsePart, promise: EventLoopPromise<Void>? = nil) {
        if let encoderContext {
            encoder.encode(part, context: encoderContext, promise: promise)
        } else {
            context?.write(wrapOutboundOut(part), promise: promise)
        }
    }

    func flush() {
        context?.flush()
    }

    var isWritable: Bool { context?.channel.isWritable ?? false }

    /// The exchange ended; the response is complete (or abandoned).
    func exchangeFinished(_ finished: Exchange, requestEnded: Bool) {
        if slotHolder == ObjectIdentifier(finished) {
            slotHolder = nil
            listener.requestFinished()
        }
        guard exchange === finished else { return }
        exchange = nil
        if !response.keepAlive { closing = true }
        if !requestEnded { discarding = true }
        armIdleTimer()
        drainQueue()
        resumeReads()
    }

    /// Writes the end of a response and closes the connection when it is marked closing.
    func endResponse(context: ChannelHandlerContext, trailers: HTTPHeaders? = nil) {
        if closing {
            let loopBound = context.loopBound
            let written = context.eventLoop.makePromise(of: Void.self)
            written.futureResult.whenComplete { _ in loopBound.value.close(promise: nil) }
            write(.end(trailers), promise: written)
        } else {
            write(.end(trailers))
        }
        context.flush()
    }
}
