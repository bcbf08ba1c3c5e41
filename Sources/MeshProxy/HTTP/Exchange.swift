// One request on its way through: waits for discovery if the name is still resolving, picks an
// endpoint, leases a connection from that endpoint's pool, streams the request up and the
// response down, and on the way out returns the connection, releases the balancer's load and
// records the metrics. Loop-confined: everything runs on the client connection's event loop,
// which is also the loop of every connection it leases.

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
    /// Response classes, retries and timeouts for this logical name.
    private let service: ServiceParams
    private let startedAt: UInt64
    private let expectsContinue: Bool

    private enum Phase {
        case resolving
        case leasing(pool: EndpointPool, waiter: Int)
        case connected(PooledConnection, UpstreamHandler)
        case finished
    }

    private var phase: Phase = .resolving
    private var endpoint: Endpoint?
    private var entry: BoundClient.Entry?
    /// Request parts that arrived before a connection was ready.
    private var pending: [HTTPClientRequestPart] = []
    private var requestEnded = false
    private var requestSent = false
    private var bodyReceived = false
    private var responseHeadSent = false
    private var keepAliveDownstream: Bool
    private var status = 0
    /// Retries left when a reused connection turns out to be closed before any response.
    private var staleRetries = 2
    /// What the exchange says about the endpoint, for failure accrual: nil says nothing.
    private var endpointSucceeded: Bool?

    init(handler: ProxyServerHandler, clientHead: HTTPRequestHead, upstreamHead: HTTPRequestHead, framing: HeaderRules.RequestFraming, client: BoundClient, route: (Path, Dtab), service: ServiceParams, start: UInt64) {
        self.handler = handler
        self.clientHead = clientHead
        self.upstreamHead = upstreamHead
        self.framing = framing
        self.client = client
        self.route = route
        self.service = service
        self.startedAt = start
        self.keepAliveDownstream = clientHead.isKeepAlive
        self.expectsContinue = clientHead.headers[canonicalForm: "expect"].contains { $0.lowercased() == "100-continue" }
    }

    private var eventLoop: any EventLoop { handler.context!.eventLoop }

    // MARK: starting

    func start() {
        client.metrics.requests.increment()
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

    private func pickAndLease() {
        switch client.pick(now: NIODeadline.now().uptimeNanoseconds) {
        case .failure(.noEndpoints(let reason)):
            fail(handler.listener.router.explainNoEndpoints(route.name, local: route.local, client: client, reason: reason))
        case .failure(.invalidAddress(let error)):
            fail(error)
        case .success(let (endpoint, entry)):
            self.endpoint = endpoint
            self.entry = entry
            entry.metrics.requests.increment()
            lease(from: entry.pool)
        }
    }

    private func lease(from pool: EndpointPool) {
        let (waiter, future) = pool.lease(on: eventLoop)
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
                fail(error as? ProxyError ?? ProxyError(.connectFailed, "cannot connect to \(endpoint.map(\.description) ?? "?"): \(error)", retryable: true))
            }
        }
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
        upstream.send(.head(upstreamHead))
        for part in pending {
            upstream.send(part)
            if case .end = part { requestSent = true }
        }
        pending.removeAll()
        upstream.flush()
        handler.resumeReads()
    }

    // MARK: the request

    /// Whether reads from the client should wait: no connection yet, or the upstream is full.
    var holdsClientReads: Bool {
        switch phase {
        case .resolving, .leasing: return true
        case .connected(_, let upstream): return !upstream.isWritable
        case .finished: return false
        }
    }

    func requestBody(_ body: ByteBuffer) {
        bodyReceived = true
        switch phase {
        case .connected(_, let upstream): upstream.send(.body(.byteBuffer(body)))
        case .resolving, .leasing: pending.append(.body(.byteBuffer(body)))
        case .finished: break
        }
    }

    func requestEnd(_ trailers: HTTPHeaders?) {
        requestEnded = true
        switch phase {
        case .connected(_, let upstream):
            upstream.send(.end(trailers))
            requestSent = true
            upstream.flush()
        case .resolving, .leasing:
            pending.append(.end(trailers))
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

    // MARK: the response (UpstreamResponseReceiver)

    var downstreamIsWritable: Bool { handler.isWritable }

    func upstreamReceived(head: HTTPResponseHead) {
        let code = head.status.code
        if code < 200 && code != 101 {
            // 100 Continue and friends go to HTTP/1.1 clients; there are more heads to come.
            if clientHead.version.minor >= 1 { handler.write(.head(MessageRewriting.informationalResponse(from: head))) }
            return
        }
        if code == 101 {
            upstreamFailed(ProtocolSwitchRefused())
            return
        }
        let framedByLength = head.headers.contains(name: "content-length") || !head.status.mayHaveResponseBody || clientHead.method == .HEAD
        if clientHead.version.minor == 0 && !framedByLength { keepAliveDownstream = false }
        if handler.closing { keepAliveDownstream = false }
        if !requestEnded && expectsContinue && !bodyReceived { keepAliveDownstream = false }
        status = Int(code)
        let responseClass = service.responseClassifier.classify(
            method: clientHead.method.rawValue, status: status,
            upstreamSaysRetryable: head.headers.first(name: "l5d-retryable")?.lowercased() == "true"
        )
        endpointSucceeded = responseClass.isSuccess
        responseHeadSent = true
        var response = MessageRewriting.downstreamResponse(
            from: head, clientVersion: clientHead.version, keepAlive: keepAliveDownstream, clearContext: handler.listener.config.clearContext
        )
        if !handler.listener.config.clearContext {
            response.headers.replaceOrAdd(name: "l5d-success-class", value: responseClass.isSuccess ? "1.0" : "0.0")
            if responseClass.isRetryable { response.headers.replaceOrAdd(name: "l5d-retryable", value: "true") } else { response.headers.remove(name: "l5d-retryable") }
        }
        handler.write(.head(response))
    }

    func upstreamReceived(body: ByteBuffer) {
        handler.write(.body(.byteBuffer(body)))
    }

    func upstreamReceived(end: HTTPHeaders?) {
        guard let context = handler.context else { return }
        if !keepAliveDownstream { handler.markClosing() }
        handler.endResponse(context: context, trailers: end)
        finish(reusable: true)
    }

    func upstreamReadComplete() {
        handler.flush()
    }

    func upstreamWritabilityChanged(isWritable: Bool) {
        if isWritable { handler.resumeReads() }
    }

    func upstreamFailed(_ error: any Error) {
        guard case .connected(let connection, let upstream) = phase else { return }
        let staleConnection = upstream.exchanges > 1 && !upstream.responseStarted
        upstream.detach()
        guard let entry else { return }
        entry.pool.release(connection, reusable: false)
        if !responseHeadSent {
            // A pooled connection the upstream had already closed: the request never got there.
            // Bodiless idempotent requests go again on another connection.
            if staleConnection, staleRetries > 0, framing == .none, requestEnded, clientHead.method.isIdempotent {
                staleRetries -= 1
                requestSent = false
                pending = [.end(nil)]
                lease(from: entry.pool)
                return
            }
            fail(ProxyError(.upstreamFailed, "\(endpoint.map(\.description) ?? "upstream") failed: \(UpstreamErrorText.describe(error))"))
        } else {
            // The response has begun: the only honest signal left is to break the connection.
            endpointSucceeded = false
            phase = .finished
            handler.abortConnection()
            complete()
        }
    }

    // MARK: ending

    /// The client went away: give everything back.
    func downstreamClosed() {
        guard let previous = endPhase() else { return }
        releaseResources(of: previous)
        complete()
    }

    /// The client's byte stream broke (a decoder error) mid-request.
    func abort(respondingWith error: ProxyError) {
        if case .finished = phase { return }
        if !responseHeadSent {
            fail(error)
        } else {
            downstreamClosed()
        }
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
        case .connected(let connection, let upstream):
            upstream.detach()
            entry?.pool.release(connection, reusable: false)
        case .resolving, .finished:
            break
        }
    }

    private func finish(reusable: Bool) {
        guard case .connected(let connection, let upstream) = phase else { return }
        upstream.detach()
        entry?.pool.release(connection, reusable: reusable && requestSent && upstream.responseKeepAlive)
        phase = .finished
        complete()
    }

    /// Releases the balancer's load and the listener's slot, records metrics, and tells the handler.
    private func complete(routerMetricsRecorded: Bool = false) {
        let elapsed = Int64(NIODeadline.now().uptimeNanoseconds &- startedAt)
        if let endpoint, let entry {
            client.finished(endpoint.address, entry: entry, success: endpointSucceeded, latency: UInt64(max(0, elapsed)), now: startedAt &+ UInt64(max(0, elapsed)))
        }
        handler.listener.requestFinished()
        if status > 0 {
            handler.sampleRecent(clientHead, status: status, elapsed: elapsed, client: client.id.description, endpoint: endpoint?.description ?? "")
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
