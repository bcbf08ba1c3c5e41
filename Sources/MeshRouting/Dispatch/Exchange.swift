// The driver of one request's `ExchangeStateMachine` (MeshCore): it feeds the machine what
// happens — the client's body and end, the pick, the lease, the upstream's response, timers —
// and carries out the step each event returns: counts, gives the connection back or closes it,
// tells the balancer how the attempt went, sends, forwards or answers. All policy (deadlines,
// timeouts, requeues, retries, replay, classification) is the machine's; this file only knows
// HTTP/1 heads, pools and NIO's timers, and keeps one timer, at the machine's `wakeUp`.
//
// Loop-confined: everything runs on the client connection's event loop, which is also the loop
// of every connection it leases. The router, the client and the service are captured once, when
// the request is routed.

import MeshConfig
import MeshCore
import NIOCore
import NIOHTTP1

extension ByteBuffer: ExchangeBodyPart {
    public var byteCount: Int { readableBytes }
}

/// The retry and requeue budgets of one request's service and client.
struct ExchangeBudgetsAdapter: ExchangeBudgets {
    let service: ServiceState
    let client: BoundClient

    func tryRetry(now: UInt64) -> Bool { service.tryRetry(now: now) }
    func tryRequeue(now: UInt64) -> Bool { client.tryRequeue(now: now) }
}

package final class Exchange: UpstreamResponseReceiver {
    typealias Machine = ExchangeStateMachine<ByteBuffer, ExchangeBudgetsAdapter>
    typealias Step = ExchangeStep<ByteBuffer>

    private unowned let downstream: any Downstream
    private let router: Router
    private let clientHead: HTTPRequestHead
    private let upstreamHead: HTTPRequestHead
    private let client: BoundClient
    /// The logical name and per-request dtab, for explaining a failure to find endpoints.
    private let route: (name: Path, local: Dtab)
    private let service: ServiceState
    /// The caller's deadline, to pass on (shrunk) to the next hop.
    private let callerDeadline: Deadline?
    private var machine: Machine
    private var trailers: HTTPHeaders?

    // What the current attempt holds.
    private var endpoint: Endpoint?
    private var entry: BoundClient.Entry?
    private var lease: (pool: EndpointPool, waiter: Int)?
    private var connection: (connection: PooledConnection, upstream: any UpstreamConnection, pool: EndpointPool)?
    /// The attempt in flight, for the router's observers (kept only when there are some).
    private var attempt: AttemptRecord?
    private var attemptNumber = 0
    /// The one timer, and the time it was set for.
    private var timer: Scheduled<Void>?
    private var timerAt: UInt64?

    package init(_ request: RoutedRequest, downstream: any Downstream) {
        self.downstream = downstream
        self.router = request.router
        self.clientHead = request.clientHead
        self.upstreamHead = request.upstreamHead
        let client = request.route.client
        self.client = client
        self.route = (request.route.name, request.localDtab)
        let service = request.route.service
        self.service = service
        self.callerDeadline = request.callerDeadline
        let params = service.params
        let clientHead = request.clientHead
        let policy = ExchangePolicy(
            deadline: ExchangeDeadline.earliest(
                start: request.start, totalTimeoutMs: params.totalTimeoutMs, listenerTimeoutMs: request.listenerTimeoutMs,
                callerRemaining: request.callerDeadline?.remaining(now: WallClock.nanoseconds())
            ),
            attemptTimeout: client.params.requestAttemptTimeoutMs.map { UInt64(milliseconds: $0) },
            bindingTimeout: UInt64(milliseconds: request.router.config.bindingTimeoutMs),
            maxRetries: params.retries.maxRetries, retryBufferBytes: params.retryBufferBytes, backoff: Backoff(params.retries.backoff),
            classifier: params.responseClassifier, method: clientHead.method.rawValue, idempotent: clientHead.method.isIdempotent,
            declaresBody: request.framing != .none, expectsContinue: request.expectsContinue && Self.expectsContinue(clientHead)
        )
        self.machine = Machine(policy: policy, budgets: ExchangeBudgetsAdapter(service: service, client: client), startedAt: request.start, seed: downstream.random.next())
    }

    /// Whether the client waits for 100 Continue before sending its body.
    package static func expectsContinue(_ head: HTTPRequestHead) -> Bool {
        head.headers[canonicalForm: "expect"].contains { $0.lowercased() == "100-continue" }
    }

    private var eventLoop: any EventLoop { downstream.eventLoop }
    private var now: UInt64 { NIODeadline.now().uptimeNanoseconds }

    package var requestEnded: Bool { machine.requestEnded }

    // MARK: running the machine

    package func start() {
        client.metrics.requests.increment()
        service.requestStarted(now: machine.startedAt)
        run(machine.start(now: now, bindingPending: client.isPending), now: now)
    }

    /// Carries out one step: counts, the connection, the attempt's outcome, then the action.
    private func run(_ step: Step, now: UInt64, response: HTTPResponseHead? = nil, end: HTTPHeaders? = nil) {
        if !step.counters.isEmpty { count(step.counters) }
        if let disposal = step.connection { dispose(disposal) }
        if let outcome = step.outcome, let endpoint, let entry {
            client.finished(endpoint.address, entry: entry, success: outcome.success, probe: outcome.probe, latency: outcome.latency, now: now)
            if attempt != nil { attemptEnded(success: outcome.success, now: now) }
        }
        act(step.action, now: now, response: response, end: end)
        setTimer()
    }

    private func count(_ counters: ExchangeCounters) {
        let metrics = service.metrics
        if counters.contains(.connectTimedOut) { metrics.timedOut(.connect) }
        if counters.contains(.attemptTimedOut) { metrics.timedOut(.attempt) }
        if counters.contains(.totalTimedOut) { metrics.timedOut(.total) }
        if counters.contains(.deadlineExceeded) { metrics.timedOut(.deadline) }
        if counters.contains(.requeued) { metrics.requeues.increment() }
        if counters.contains(.requeueRefused) { metrics.budgetExhausted.increment() }
        if counters.contains(.retriesLimited) { metrics.retriesLimited.increment() }
    }

    /// Keeps the one timer at the machine's `wakeUp`.
    private func setTimer() {
        let wanted = machine.wakeUp
        guard wanted != timerAt else { return }
        timer?.cancel()
        timer = nil
        timerAt = wanted
        guard let wanted else { return }
        timer = eventLoop.assumeIsolated().scheduleTask(deadline: NIODeadline.uptimeNanoseconds(wanted)) { [self] in
            timer = nil
            timerAt = nil
            let at = now
            run(machine.timerFired(now: at), now: at)
        }
    }

    private func dispose(_ disposal: ConnectionDisposal) {
        switch disposal {
        case .cancelLease:
            guard let (pool, waiter) = lease else { return }
            // Cleared first: cancelling fails the lease's promise at once.
            lease = nil
            pool.cancel(waiter: waiter)
        case .returnIfClean, .close:
            guard let (connection, upstream, pool) = connection else { return }
            self.connection = nil
            upstream.detach()
            pool.release(connection, reusable: disposal == .returnIfClean && upstream.reusable)
        }
    }

    private func act(_ action: ExchangeAction<ByteBuffer>, now: UInt64, response: HTTPResponseHead?, end: HTTPHeaders?) {
        switch action {
        case .none:
            break
        case .awaitBinding:
            client.whenResolved(on: eventLoop).assumeIsolated().whenSuccess { [self] in
                let at = self.now
                run(machine.bound(now: at), now: at)
            }
        case .pick(let avoiding):
            pick(avoiding: avoiding, now: now)
        case .lease:
            guard let entry else { return }
            lease(from: entry.pool)
        case .send(let parts, let end, let within):
            guard let upstream = connection?.upstream else { return }
            attemptNumber += 1
            if !router.observers.isEmpty, let endpoint {
                if attempt != nil { attemptEnded(success: nil, now: now) }
                let record = AttemptRecord(
                    router: router.label, client: client.id, endpoint: endpoint, number: attemptNumber,
                    reusedConnection: upstream.exchanges > 1, startedAt: now, ended: nil
                )
                attempt = record
                for observer in router.observers { observer.attemptStarted(record) }
            }
            upstream.send(.head(attemptHead(within: within)))
            for part in parts { upstream.send(.body(.byteBuffer(part))) }
            if end { upstream.send(.end(trailers)) }
            upstream.flush()
            downstream.resumeReads()
        case .sendBody(let part):
            connection?.upstream.send(.body(.byteBuffer(part)))
        case .sendEnd:
            guard let upstream = connection?.upstream else { return }
            upstream.send(.end(trailers))
            upstream.flush()
        case .forwardInformational:
            // 100 Continue and friends go to HTTP/1.1 clients; there are more heads to come.
            if let response { downstream.forwardInformational(response) }
        case .forwardHead(let responseClass):
            guard let response else { return }
            downstream.forwardHead(response, responseClass: responseClass, clientMayStillSendBody: machine.clientMayStillSendBody)
        case .endResponse:
            downstream.endResponse(trailers: end)
            complete(status: machine.summary.status ?? 0, error: nil, now: now)
        case .respond(let failure):
            let error = proxyError(for: failure, now: now)
            downstream.respond(error, clientMayStillSendBody: machine.clientMayStillSendBody)
            complete(status: Int(error.status.code), error: error, now: now)
        case .abortDownstream:
            downstream.abort()
            complete(status: machine.summary.status ?? 0, error: nil, now: now)
        case .abandon:
            complete(status: machine.summary.status ?? 0, error: nil, now: now)
        }
    }

    /// Picks an endpoint, one this request has not tried while there is one.
    private func pick(avoiding: Set<Endpoint.Address>, now: UInt64) {
        switch client.pick(now: now, avoiding: avoiding) {
        case .failure(.noEndpoints(let reason)):
            run(machine.pickFailed(router.explainNoEndpoints(route.name, local: route.local, client: client, reason: reason), now: now), now: now)
        case .failure(.invalidAddress(let error)):
            run(machine.pickFailed(error, now: now), now: now)
        case .success(let (endpoint, entry, probe)):
            self.endpoint = endpoint
            self.entry = entry
            entry.metrics.requests.increment()
            run(machine.picked(endpoint.address, probe: probe, now: now), now: now)
        }
    }

    private func lease(from pool: EndpointPool) {
        switch pool.lease(on: eventLoop) {
        case .ready(let connection):
            granted(connection, pool: pool)
        case .pending(let waiter, let future):
            lease = (pool, waiter)
            future.assumeIsolated().whenComplete { [self] result in
                guard let current = lease, current.pool === pool, current.waiter == waiter else {
                    if case .success(let connection) = result { pool.release(connection, reusable: true) }
                    return
                }
                lease = nil
                switch result {
                case .success(let connection):
                    granted(connection, pool: pool)
                case .failure(let error):
                    let proxyError = error as? ProxyError ?? ProxyError(.connectFailed, "cannot connect to \(endpoint.map(\.description) ?? "?"): \(error)", retryable: true)
                    let at = now
                    run(machine.leaseFailed(proxyError, requeueable: proxyError.kind == .connectFailed, connectTimedOut: proxyError.connectTimedOut, now: at), now: at)
                }
            }
        }
    }

    private func granted(_ connection: PooledConnection, pool: EndpointPool) {
        let upstream = connection.handler.value
        guard upstream.isActive else {
            // Closed while idle in the pool: not a failure of this request.
            pool.release(connection, reusable: false)
            lease(from: pool)
            return
        }
        upstream.attach(self)
        self.connection = (connection, upstream, pool)
        let at = now
        run(machine.leaseGranted(reused: upstream.exchanges > 1, now: at), now: at)
    }

    /// The request head for this attempt: the earliest of the caller's deadline, ours and this
    /// attempt's goes along, so that the next hop does not work past it.
    private func attemptHead(within: UInt64?) -> HTTPRequestHead {
        guard within != nil || callerDeadline != nil else { return upstreamHead }
        var head = upstreamHead
        let wallNow = WallClock.nanoseconds()
        if let passOn = Deadline.passOn(callerDeadline, within: within, now: wallNow) {
            head.headers.replaceOrAdd(name: "l5d-ctx-deadline", value: passOn.headerValue(now: wallNow))
        }
        return head
    }

    /// What meshd answers for a failure of the machine's.
    private func proxyError(for failure: ExchangeFailure, now: UInt64) -> ProxyError {
        let upstreamName = endpoint.map(\.description)
        switch failure {
        case .noRoute(let error), .lease(let error), .client(let error):
            return error as? ProxyError ?? ProxyError(.upstreamFailed, "\(error)")
        case .bindingTimeout(let nanoseconds):
            return ProxyError(.bindingTimeout, "discovery did not answer for \(client.id) within \(nanoseconds / 1_000_000) ms (bindingTimeoutMs)", retryable: true)
        case .upstream(let error):
            return ProxyError(.upstreamFailed, "\(upstreamName ?? "upstream") failed: \(UpstreamErrorText.describe(error))")
        case .attemptTimeout(let nanoseconds):
            return ProxyError(.timeout, "no response from \(upstreamName ?? "the upstream") within requestAttemptTimeoutMs (\(nanoseconds / 1_000_000) ms)")
        case .deadline(let deadline, let elapsed):
            let kind: ProxyError.Kind = deadline.kind == .caller ? .deadlineExceeded : .timeout
            return ProxyError(kind, "\(route.name): no response within \(deadline.description) (\(elapsed / 1_000_000) ms elapsed)")
        }
    }

    // MARK: the request (from the client connection)

    /// Whether reads from the client should wait: no connection yet, or the upstream is full.
    package var holdsClientReads: Bool {
        if machine.waitsForConnection { return true }
        if machine.isConnected, let upstream = connection?.upstream { return !upstream.isWritable }
        return false
    }

    package func requestBody(_ part: ByteBuffer) {
        var part = part
        if machine.keepsBodyForReplay, part.readableBytes < Self.compactBelow, part.storageCapacity > 2 * part.readableBytes {
            // Kept for a replay, a small slice would hold its whole read buffer alive: keep a
            // copy of just its bytes instead.
            part = ByteBuffer(bytes: part.readableBytesView)
        }
        run(machine.requestBody(part), now: 0)
    }

    /// Body parts smaller than this are copied when kept for replay.
    static let compactBelow = 4096

    package func requestEnd(_ trailers: HTTPHeaders?) {
        if machine.isFinished {
            // Answered before the request was complete; the rest was dropped.
            downstream.exchangeFinished(self, requestEnded: true)
            return
        }
        self.trailers = trailers
        run(machine.requestEnd(), now: 0)
    }

    package func flushUpstream() {
        if machine.isConnected { connection?.upstream.flush() }
    }

    package func downstreamBecameWritable() {
        if machine.isConnected { connection?.upstream.resumeReading() }
    }

    /// The client went away: give everything back.
    package func downstreamClosed() {
        let at = now
        run(machine.downstreamClosed(now: at), now: at)
    }

    /// The client's byte stream broke (a decoder error) mid-request. Returns whether the error
    /// was answered (false when the response had begun, or the exchange had finished).
    package func abort(respondingWith error: ProxyError) -> Bool {
        let at = now
        let step = machine.downstreamFailed(error, now: at)
        let answered: Bool
        if case .respond = step.action { answered = true } else { answered = false }
        run(step, now: at)
        return answered
    }

    // MARK: the response (UpstreamResponseReceiver)

    package var downstreamIsWritable: Bool { downstream.isWritable }

    package func upstreamReceived(head: HTTPResponseHead) {
        let at = now
        let step = machine.responseHead(
            status: Int(head.status.code), upstreamSaysRetryable: head.headers.first(name: "l5d-retryable")?.lowercased() == "true", now: at
        )
        run(step, now: at, response: head)
    }

    package func upstreamReceived(body: ByteBuffer) {
        if machine.responseBody(byteCount: body.readableBytes) {
            downstream.forwardBody(body)
        } else {
            // Read away (a retryable response): the machine may have cut the discard short.
            setTimer()
        }
    }

    package func upstreamReceived(end: HTTPHeaders?) {
        let at = now
        run(machine.responseEnd(now: at), now: at, end: end)
    }

    package func upstreamReadComplete() {
        downstream.flush()
    }

    package func upstreamWritabilityChanged(isWritable: Bool) {
        if isWritable { downstream.resumeReads() }
    }

    package func upstreamFailed(_ error: any Error) {
        let nothingReceived = connection.map { !$0.upstream.responseStarted } ?? false
        let at = now
        run(machine.upstreamFailed(error, nothingReceived: nothingReceived, now: at), now: at)
    }

    // MARK: ending

    /// The request is done: its listener slot goes back and its record is emitted, once.
    private func attemptEnded(success: Bool?, now: UInt64) {
        guard var record = attempt else { return }
        attempt = nil
        record.ended = AttemptRecord.Ended(at: now, success: success)
        for observer in router.observers { observer.attemptEnded(record) }
    }

    private func complete(status: Int, error: ProxyError?, now: UInt64) {
        // An attempt still open (the client went away) ends with the request, saying nothing.
        if attempt != nil { attemptEnded(success: nil, now: now) }
        let record = RequestRecord(
            router: router, request: clientHead, startedAt: machine.startedAt, endedAt: now, status: status, error: error,
            summary: machine.summary, client: client, service: service, entry: entry, endpoint: endpoint
        )
        router.requestCompleted(record, random: &downstream.random)
        downstream.exchangeFinished(self, requestEnded: machine.requestEnded)
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
