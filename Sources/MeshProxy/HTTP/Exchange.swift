// One request on its way through, over one or more attempts. Each attempt picks an endpoint,
// leases a connection from that endpoint's pool, streams the request up and the response down.
//
// Around the attempts sit the service's policies, in this order:
// - a deadline for the response head: the earliest of `totalTimeoutMs`, the listener's
//   `timeoutMs` and the caller's `l5d-ctx-deadline`; when it passes, the attempt in flight is
//   cancelled and the caller gets 504. No attempt starts after it, and the next hop is told the
//   (shrunk) deadline;
// - `requestAttemptTimeoutMs` per attempt;
// - requeues: a connection that could not be opened means the request was never sent, so it
//   moves to another endpoint, under the client's requeue budget, whatever its method;
// - retries: a response (or a failed exchange) the classifier calls retryable is dropped and the
//   request sent again after the backoff, under the service's retry budget — but only when the
//   whole request body is held (it ended, within `retryBufferSize`). Larger or still-streaming
//   bodies are never replayed. A retry prefers an endpoint not tried yet.
//
// Each attempt's outcome feeds the balancer (load, latency, failure accrual) as it ends.
// Loop-confined: everything runs on the client connection's event loop, which is also the loop
// of every connection it leases.

#if canImport(Glibc)
import Glibc
#endif
import MeshConfig
import MeshCore
import NIOCore
import NIOHTTP1

final class Exchange: UpstreamResponseReceiver {
    private unowned let handler: ProxyServerHandler
    private let clientHead: HTTPRequestHead
    private let upstreamHead: HTTPRequestHead
    private let framing: HeaderRules.RequestFraming
    private let client: BoundClient
    /// The logical name and per-request dtab, for explaining a failure to find endpoints.
    private let route: (name: Path, local: Dtab)
    private let service: ServiceState
    private let startedAt: UInt64
    private let expectsContinue: Bool
    /// By when (uptime ns) the response head must arrive, and why: "total", "deadline".
    private let deadline: (at: UInt64, kind: String, description: String)?
    /// The caller's deadline, to pass on (shrunk) to the next hop.
    private let callerDeadline: Deadline?

    private enum Phase {
        case resolving
        case leasing(pool: EndpointPool, waiter: Int)
        case connected(PooledConnection, UpstreamHandler)
        /// Reading away a retryable failure response before trying again.
        case discarding(PooledConnection, UpstreamHandler)
        case backingOff(Scheduled<Void>)
        case finished
    }

    private var phase: Phase = .resolving
    // The current attempt.
    private var endpoint: Endpoint?
    private var entry: BoundClient.Entry?
    private var attemptStartedAt: UInt64 = 0
    private var attemptOpen = false
    /// The current attempt is the probe of an ejected endpoint.
    private var attemptIsProbe = false
    /// Retries this request has had (requeues and stale-connection resends aside).
    private var retries = 0
    private var attemptTimer: Scheduled<Void>?
    private var deadlineTimer: Scheduled<Void>?
    private var tried: Set<Endpoint.Address> = []
    /// Requeues this request has had; at most `maxRequeues`, whatever the budget says.
    private var requeues = 0
    private static let maxRequeues = 3
    private var backoff: Backoff
    // The request body: parts not yet sent on this attempt, and, while the body fits the retry
    // buffer, the parts already sent (so that a retry can send them again).
    private var body: [ByteBuffer] = []
    private var sentParts = 0
    private var bodyBytes = 0
    private var keepForReplay = true
    private var trailers: HTTPHeaders?
    /// The client has sent the whole request.
    private(set) var requestEnded = false
    private var requestSent = false
    private var bodyReceived = false
    // The response.
    private var responseHeadSent = false
    private var keepAliveDownstream: Bool
    private var status = 0
    /// Retries left when a reused connection turns out to be closed before any response.
    private var staleRetries = 2
    /// Informational (1xx) responses this attempt has had; an upstream sending endlessly many
    /// would hold the request forever.
    private var informational = 0
    private static let maxInformational = 16
    /// What the final attempt says about its endpoint, for failure accrual: nil says nothing.
    private var endpointSucceeded: Bool?

    init(
        handler: ProxyServerHandler, clientHead: HTTPRequestHead, upstreamHead: HTTPRequestHead, framing: HeaderRules.RequestFraming,
        expectsContinue: Bool, client: BoundClient, route: (Path, Dtab), service: ServiceState, callerDeadline: Deadline?, start: UInt64
    ) {
        self.handler = handler
        self.clientHead = clientHead
        self.upstreamHead = upstreamHead
        self.framing = framing
        self.client = client
        self.route = route
        self.service = service
        self.startedAt = start
        self.callerDeadline = callerDeadline
        self.keepAliveDownstream = clientHead.isKeepAlive
        self.expectsContinue = expectsContinue && Self.expectsContinue(clientHead)
        self.backoff = Backoff(service.params.retries.backoff)
        var candidates: [(UInt64, String, String)] = []
        if let total = service.params.totalTimeoutMs {
            candidates.append((start &+ UInt64(total) * 1_000_000, "total", "the total timeout of \(total) ms"))
        }
        if let server = handler.listener.config.timeoutMs {
            candidates.append((start &+ UInt64(server) * 1_000_000, "total", "the listener's timeout of \(server) ms"))
        }
        if let callerDeadline {
            let remaining = callerDeadline.remaining(now: WallClock.nanoseconds())
            candidates.append((start.saturatingAdding(remaining), "deadline", "the request's l5d-ctx-deadline"))
        }
        self.deadline = candidates.min { $0.0 < $1.0 }.map { (at: $0.0, kind: $0.1, description: $0.2) }
    }

    /// Whether the client waits for 100 Continue before sending its body.
    static func expectsContinue(_ head: HTTPRequestHead) -> Bool {
        head.headers[canonicalForm: "expect"].contains { $0.lowercased() == "100-continue" }
    }

    private var eventLoop: any EventLoop { handler.context!.eventLoop }
    private var now: UInt64 { NIODeadline.now().uptimeNanoseconds }

    // MARK: starting

    func start() {
        client.metrics.requests.increment()
        service.requestStarted(now: startedAt)
        if let deadline {
            guard deadline.at > now else {
                timedOut()
                return
            }
            deadlineTimer = eventLoop.assumeIsolated().scheduleTask(deadline: NIODeadline.uptimeNanoseconds(deadline.at)) { [self] in
                timedOut()
            }
        }
        guard client.isPending else {
            pickAndLease()
            return
        }
        let timeout = TimeAmount.milliseconds(Int64(handler.listener.router.config.bindingTimeoutMs))
        let timer = eventLoop.assumeIsolated().scheduleTask(in: timeout) { [self] in
            guard case .resolving = phase else { return }
            fail(ProxyError(.bindingTimeout, "discovery did not answer for \(client.id) within \(timeout.nanoseconds / 1_000_000) ms (bindingTimeoutMs)", retryable: true))
        }
        client.whenResolved(on: eventLoop).assumeIsolated().whenSuccess { [self] in
            timer.cancel()
            guard case .resolving = phase else { return }
            pickAndLease()
        }
    }

    /// Picks an endpoint, one this request has not tried while there is one, and asks its pool
    /// for a connection.
    private func pickAndLease() {
        let endpoint: Endpoint, entry: BoundClient.Entry, probe: Bool
        switch client.pick(now: now, avoiding: tried) {
        case .failure(.noEndpoints(let reason)):
            fail(handler.listener.router.explainNoEndpoints(route.name, local: route.local, client: client, reason: reason))
            return
        case .failure(.invalidAddress(let error)):
            fail(error)
            return
        case .success(let choice):
            (endpoint, entry, probe) = choice
        }
        self.endpoint = endpoint
        self.entry = entry
        attemptIsProbe = probe
        attemptStartedAt = now
        attemptOpen = true
        entry.metrics.requests.increment()
        if let attemptTimeout = client.params.requestAttemptTimeoutMs {
            attemptTimer = eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(attemptTimeout))) { [self] in
                attemptTimedOut(after: attemptTimeout)
            }
        }
        lease(from: entry.pool)
    }

    private func lease(from pool: EndpointPool) {
        let (waiter, future): (Int, EventLoopFuture<PooledConnection>)
        switch pool.lease(on: eventLoop) {
        case .ready(let connection):
            connected(connection, pool: pool)
            return
        case .pending(let id, let pending):
            (waiter, future) = (id, pending)
        }
        phase = .leasing(pool: pool, waiter: waiter)
        future.assumeIsolated().whenComplete { [self] result in
            guard case .leasing(_, let current) = phase, current == waiter else {
                if case .success(let connection) = result { pool.release(connection, reusable: true) }
                return
            }
            switch result {
            case .success(let connection):
                connected(connection, pool: pool)
            case .failure(let error):
                let proxyError = error as? ProxyError ?? ProxyError(.connectFailed, "cannot connect to \(endpoint.map(\.description) ?? "?"): \(error)", retryable: true)
                leaseFailed(proxyError)
            }
        }
    }

    /// No connection: a connect failure was never a sent request, so it may go elsewhere.
    private func leaseFailed(_ error: ProxyError) {
        guard error.kind == .connectFailed else {
            fail(error)
            return
        }
        if error.connectTimedOut { service.metrics.timedOut("connect") }
        endAttempt(success: false)
        if let address = endpoint?.address { tried.insert(address) }
        if requeues < Self.maxRequeues, !deadlinePassed {
            if client.tryRequeue(now: now) {
                requeues += 1
                service.metrics.requeues.increment()
                pickAndLease()
                return
            }
            service.metrics.budgetExhausted.increment()
        }
        fail(error)
    }

    private func connected(_ connection: PooledConnection, pool: EndpointPool) {
        let upstream = connection.handler.value
        guard upstream.isActive else {
            pool.release(connection, reusable: false)
            lease(from: pool)
            return
        }
        upstream.attach(self)
        phase = .connected(connection, upstream)
        informational = 0
        upstream.send(.head(attemptHead()))
        for part in body[sentParts...] { upstream.send(.body(.byteBuffer(part))) }
        sentParts = body.count
        if !keepForReplay {
            body.removeAll()
            sentParts = 0
        }
        if requestEnded {
            upstream.send(.end(trailers))
            requestSent = true
        }
        upstream.flush()
        handler.resumeReads()
    }

    /// The request head for this attempt: the earliest of the caller's deadline, ours and this
    /// attempt's goes along, so that the next hop does not work past it.
    private func attemptHead() -> HTTPRequestHead {
        var head = upstreamHead
        let current = now
        var limits: [UInt64] = deadline.map { [$0.at] } ?? []
        if let attemptTimeout = client.params.requestAttemptTimeoutMs { limits.append(current &+ UInt64(attemptTimeout) * 1_000_000) }
        let wallNow = WallClock.nanoseconds()
        let within = limits.min().map { $0 &- min($0, current) }
        if let passOn = Deadline.passOn(callerDeadline, within: within, now: wallNow) {
            head.headers.replaceOrAdd(name: "l5d-ctx-deadline", value: passOn.headerValue(now: wallNow))
        }
        return head
    }

    // MARK: the request

    /// Whether reads from the client should wait: no connection yet, or the upstream is full.
    var holdsClientReads: Bool {
        switch phase {
        case .resolving, .leasing, .backingOff: return true
        case .connected(_, let upstream): return !upstream.isWritable
        case .discarding, .finished: return false
        }
    }

    func requestBody(_ part: ByteBuffer) {
        bodyReceived = true
        bodyBytes += part.readableBytes
        body.append(part)
        if keepForReplay && bodyBytes > service.params.retryBufferBytes {
            // Too large to keep: this request will not be replayed; drop what was sent.
            keepForReplay = false
            body.removeFirst(sentParts)
            sentParts = 0
        }
        guard case .connected(_, let upstream) = phase else { return }
        upstream.send(.body(.byteBuffer(part)))
        if keepForReplay {
            sentParts = body.count
        } else {
            body.removeAll()
        }
    }

    func requestEnd(_ trailers: HTTPHeaders?) {
        requestEnded = true
        self.trailers = trailers
        switch phase {
        case .connected(_, let upstream):
            upstream.send(.end(trailers))
            requestSent = true
            upstream.flush()
        case .resolving, .leasing, .backingOff, .discarding:
            break
        case .finished:
            // Answered before the request was complete; the rest was dropped.
            handler.exchangeFinished(self, closeConnection: !keepAliveDownstream, requestEnded: true)
        }
    }

    func flushUpstream() {
        if case .connected(_, let upstream) = phase { upstream.flush() }
    }

    func downstreamBecameWritable() {
        if case .connected(_, let upstream) = phase { upstream.resumeReading() }
    }

    /// Whether a retryable failure may be retried now; takes the retry from the budget.
    private func mayRetry() -> Bool {
        guard !responseHeadSent, requestEnded, keepForReplay, !deadlinePassed else { return false }
        guard retries < service.params.retries.maxRetries else {
            service.metrics.retriesLimited.increment()
            return false
        }
        guard service.tryRetry(now: now) else { return false }
        retries += 1
        return true
    }

    private var deadlinePassed: Bool { deadline.map { now >= $0.at } ?? false }

    // MARK: the response (UpstreamResponseReceiver)

    var downstreamIsWritable: Bool { handler.isWritable }

    func upstreamReceived(head: HTTPResponseHead) {
        guard case .connected(let connection, let upstream) = phase else { return }
        let code = head.status.code
        if code < 200 && code != 101 {
            informational += 1
            guard informational <= Self.maxInformational else {
                upstreamFailed(TooManyInformationalResponses())
                return
            }
            // 100 Continue and friends go to HTTP/1.1 clients; there are more heads to come.
            if clientHead.version.minor >= 1 { handler.write(.head(MessageRewriting.informationalResponse(from: head))) }
            return
        }
        if code == 101 {
            upstreamFailed(ProtocolSwitchRefused())
            return
        }
        attemptTimer?.cancel()
        let responseClass = service.params.responseClassifier.classify(
            method: clientHead.method.rawValue, status: Int(code),
            upstreamSaysRetryable: head.headers.first(name: "l5d-retryable")?.lowercased() == "true"
        )
        if responseClass.isRetryable, mayRetry() {
            endAttempt(success: false)
            phase = .discarding(connection, upstream)
            return
        }
        deadlineTimer?.cancel()
        if clientHead.version.minor == 0 {
            // HTTP/1.0 has no chunked framing: a body of unknown length ends with the connection.
            let framedByLength = head.headers.contains(name: "content-length") || !head.status.mayHaveResponseBody || clientHead.method == .HEAD
            if !framedByLength { keepAliveDownstream = false }
        }
        if handler.closing { keepAliveDownstream = false }
        if !requestEnded && expectsContinue && !bodyReceived { keepAliveDownstream = false }
        status = Int(code)
        endpointSucceeded = responseClass.isSuccess
        responseHeadSent = true
        let response = MessageRewriting.downstreamResponse(
            from: head, clientVersion: clientHead.version, keepAlive: keepAliveDownstream, clearContext: handler.listener.config.clearContext,
            responseClass: responseClass
        )
        handler.write(.head(response))
    }

    func upstreamReceived(body: ByteBuffer) {
        if case .discarding = phase { return }
        handler.write(.body(.byteBuffer(body)))
    }

    func upstreamReceived(end: HTTPHeaders?) {
        switch phase {
        case .discarding(let connection, let upstream):
            giveBack(connection, upstream, reusable: requestSent && upstream.reusable)
            retryAfterBackoff()
        case .connected:
            guard let context = handler.context else { return }
            if !keepAliveDownstream { handler.markClosing() }
            handler.endResponse(context: context, trailers: end)
            finish(reusable: true)
        default:
            break
        }
    }

    func upstreamReadComplete() {
        handler.flush()
    }

    func upstreamWritabilityChanged(isWritable: Bool) {
        if isWritable { handler.resumeReads() }
    }

    func upstreamFailed(_ error: any Error) {
        switch phase {
        case .discarding(let connection, let upstream):
            giveBack(connection, upstream, reusable: false)
            retryAfterBackoff()
            return
        case .connected(let connection, let upstream):
            let staleConnection = upstream.exchanges > 1 && !upstream.responseStarted
            giveBack(connection, upstream, reusable: false)
            guard !responseHeadSent else {
                // The response has begun: the only honest signal left is to break the connection.
                endpointSucceeded = false
                phase = .finished
                handler.abortConnection()
                complete()
                return
            }
            // A pooled connection the upstream had already closed: most likely the request never
            // got there, but it cannot be known, so only bodiless idempotent requests go again on
            // another connection — within the deadline and paid from the retry budget, like any
            // other retry (it does not count against maxRetries).
            if staleConnection, staleRetries > 0, framing == .none, requestEnded, clientHead.method.isIdempotent, !deadlinePassed,
               let pool = entry?.pool, service.tryRetry(now: now) {
                staleRetries -= 1
                requestSent = false
                sentParts = 0
                lease(from: pool)
                return
            }
            attemptTimer?.cancel()
            let responseClass = service.params.responseClassifier.classify(method: clientHead.method.rawValue, status: nil)
            if responseClass.isRetryable, mayRetry() {
                endAttempt(success: false)
                retryAfterBackoff()
                return
            }
            fail(ProxyError(.upstreamFailed, "\(endpoint.map(\.description) ?? "upstream") failed: \(UpstreamErrorText.describe(error))"))
        default:
            return
        }
    }

    /// Ends the use of the attempt's connection: back to the pool (or closed). The phase moves
    /// on at once, so that nothing later — a failure answer, a cancelled retry — gives the same
    /// connection back a second time (which once drove the pool's counts below zero).
    private func giveBack(_ connection: PooledConnection, _ upstream: UpstreamHandler, reusable: Bool) {
        phase = .resolving
        upstream.detach()
        entry?.pool.release(connection, reusable: reusable)
    }

    // MARK: retries and timeouts

    /// Sends the request again after the retry backoff (if the deadline allows).
    private func retryAfterBackoff() {
        endAttempt(success: false)
        if let address = endpoint?.address { tried.insert(address) }
        requestSent = false
        sentParts = 0
        let wait = backoff.next(using: &handler.random)
        guard wait > 0 else {
            pickAndLease()
            return
        }
        let timer = eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(Int64(wait))) { [self] in
            guard case .backingOff = phase else { return }
            pickAndLease()
        }
        phase = .backingOff(timer)
    }

    /// The attempt in flight took longer than `requestAttemptTimeoutMs`.
    private func attemptTimedOut(after milliseconds: Int) {
        let endpointToBlame: Bool
        switch phase {
        case .leasing: endpointToBlame = false  // waiting in meshd's own pool queue
        case .connected: endpointToBlame = true
        default: return
        }
        service.metrics.timedOut("attempt")
        cancelAttempt(endpointToBlame: endpointToBlame)
        let responseClass = service.params.responseClassifier.classify(method: clientHead.method.rawValue, status: nil)
        if responseClass.isRetryable, mayRetry() {
            retryAfterBackoff()
            return
        }
        fail(ProxyError(.timeout, "no response from \(endpoint.map(\.description) ?? "the upstream") within requestAttemptTimeoutMs (\(milliseconds) ms)"))
    }

    /// The deadline for the response head passed: whatever is in flight is cancelled.
    private func timedOut() {
        guard !responseHeadSent, let deadline else { return }
        if case .finished = phase { return }
        service.metrics.timedOut(deadline.kind)
        // Our own deadline passing says nothing about the endpoint.
        cancelAttempt(endpointToBlame: false)
        let elapsed = (now &- startedAt) / 1_000_000
        let kind: ProxyError.Kind = deadline.kind == "deadline" ? .deadlineExceeded : .timeout
        fail(ProxyError(kind, "\(route.name): no response within \(deadline.description) (\(elapsed) ms elapsed)"))
    }

    /// Stops the attempt in flight: its connection is closed, not reused.
    private func cancelAttempt(endpointToBlame: Bool) {
        switch phase {
        case .leasing(let pool, let waiter):
            phase = .resolving
            pool.cancel(waiter: waiter)
        case .connected(let connection, let upstream), .discarding(let connection, let upstream):
            phase = .resolving
            upstream.detach()
            entry?.pool.release(connection, reusable: false)
        case .backingOff(let timer):
            phase = .resolving
            timer.cancel()
        case .resolving, .finished:
            break
        }
        endAttempt(success: endpointToBlame ? false : nil)
    }

    /// The current attempt's outcome, to the balancer (once per attempt).
    private func endAttempt(success: Bool?) {
        attemptTimer?.cancel()
        attemptTimer = nil
        guard attemptOpen, let endpoint, let entry else { return }
        attemptOpen = false
        let at = now
        client.finished(endpoint.address, entry: entry, success: success, probe: attemptIsProbe, latency: at &- attemptStartedAt, now: at)
    }

    // MARK: ending

    /// The client went away: give everything back.
    func downstreamClosed() {
        guard let previous = endPhase() else { return }
        releaseResources(of: previous)
        if !responseHeadSent { endpointSucceeded = nil }
        complete()
    }

    /// The client's byte stream broke (a decoder error) mid-request. Returns whether the error
    /// was answered (false when the response had begun, or the exchange had finished).
    func abort(respondingWith error: ProxyError) -> Bool {
        if case .finished = phase { return false }
        if !responseHeadSent {
            fail(error)
            return true
        }
        downstreamClosed()
        return false
    }

    /// Answers with a response of meshd's own instead of the upstream's.
    private func fail(_ error: ProxyError) {
        guard let previous = endPhase() else { return }
        releaseResources(of: previous)
        switch error.kind {
        case .connectFailed, .upstreamFailed: endpointSucceeded = false
        default: endpointSucceeded = nil
        }
        status = Int(error.status.code)
        handler.listener.router.countError(error)
        if !requestEnded && expectsContinue && !bodyReceived { keepAliveDownstream = false }
        handler.respond(error, version: clientHead.version, keepAlive: keepAliveDownstream && !handler.closing, start: startedAt)
        responseHeadSent = true
        complete(routerMetricsRecorded: true)
    }

    /// Marks the exchange finished, returning the phase it was in (nil if it already was).
    /// The phase changes first, so that callbacks which run while resources are released (a
    /// cancelled lease fails its promise at once) see a finished exchange and do nothing.
    private func endPhase() -> Phase? {
        if case .finished = phase { return nil }
        let previous = phase
        phase = .finished
        return previous
    }

    private func releaseResources(of previous: Phase) {
        switch previous {
        case .leasing(let pool, let waiter):
            pool.cancel(waiter: waiter)
        case .connected(let connection, let upstream), .discarding(let connection, let upstream):
            upstream.detach()
            entry?.pool.release(connection, reusable: false)
        case .backingOff(let timer):
            timer.cancel()
        case .resolving, .finished:
            break
        }
    }

    private func finish(reusable: Bool) {
        guard case .connected(let connection, let upstream) = phase else { return }
        upstream.detach()
        entry?.pool.release(connection, reusable: reusable && requestSent && upstream.reusable)
        phase = .finished
        complete()
    }

    /// Releases the balancer's load and the listener's slot, records metrics, and tells the handler.
    private func complete(routerMetricsRecorded: Bool = false) {
        deadlineTimer?.cancel()
        let elapsed = Int64(now &- startedAt)
        endAttempt(success: endpointSucceeded)
        handler.listener.requestFinished()
        if status > 0 {
            if endpointSucceeded == true { service.metrics.successes.increment() } else { service.metrics.failures.increment() }
            if handler.listener.router.recentRequests != nil {
                handler.sampleRecent(clientHead, status: status, elapsed: elapsed, client: client.id.description, endpoint: endpoint?.description ?? "")
            }
            if !routerMetricsRecorded { handler.listener.router.metrics.responded(status: status, nanoseconds: elapsed) }
            client.metrics.responded(status: status, nanoseconds: elapsed)
            entry?.metrics.responded(status: status, nanoseconds: elapsed)
        }
        handler.exchangeFinished(self, closeConnection: !keepAliveDownstream, requestEnded: requestEnded)
    }
}

extension HTTPMethod {
    /// RFC 9110 §9.2.2.
    var isIdempotent: Bool {
        switch self {
        case .GET, .HEAD, .OPTIONS, .TRACE, .PUT, .DELETE: return true
        default: return false
        }
    }
}

/// Nanoseconds since the Unix epoch, for deadlines that cross hosts.
enum WallClock {
    static func nanoseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
    }
}

struct TooManyInformationalResponses: Error, CustomStringConvertible {
    var description: String { "the upstream sent more than 16 informational (1xx) responses to one request" }
}

struct ProtocolSwitchRefused: Error, CustomStringConvertible {
    var description: String { "the upstream switched protocols (101), which meshd does not proxy yet" }
}

enum UpstreamErrorText {
    static func describe(_ error: any Error) -> String {
        if error is HTTPParserError { return "invalid HTTP response (\(error))" }
        if let io = error as? IOError {
            switch io.errnoCode {
            case ECONNRESET: return "connection reset"
            case EPIPE: return "connection closed while sending"
            default: return "\(io)"
            }
        }
        return "\(error)"
    }
}
