// One request on its way through meshd, over one or more attempts, as a pure state machine:
// events come in (the request's body and end from the client side, a binding, a pick, a lease
// granted or failed, the upstream's response head, body, end or failure, a timer, the client
// gone), each with the time, and every event returns the step the driver must take. The
// machine never reads a clock, never schedules anything and holds no connection: it says when
// it wants to be woken (`wakeUp`), what to do with the connection in use, what to tell the
// balancer about the attempt that ended, and what to send or answer.
//
// The policies, in the order they apply:
// - a deadline for the response head (`ExchangeDeadline`: the earliest of the service's total
//   timeout, the listener's timeout and the caller's `l5d-ctx-deadline`); when it passes, the
//   attempt in flight is cancelled and the client answered. No attempt starts after it, and the
//   next hop is told what is left of it;
// - a timeout per attempt (`requestAttemptTimeoutMs`), from the pick to the response head;
// - requeues: a connection that could not be opened means the request was never sent, so it
//   goes to another endpoint, under the requeue budget (at most `maxRequeues`), whatever its
//   method;
// - retries: a response head or a failure the classifier calls retryable is dropped and the
//   request sent again after the backoff, under the retry budget and `maxRetries` — only while
//   the whole request body is held (it ended, within `retryBufferBytes`). Larger or
//   still-streaming bodies are never replayed. A retry prefers endpoints not tried yet;
// - a pooled connection found closed before any byte of the response came back is resent on
//   another connection (at most `maxStaleResends` times), but only for bodiless idempotent
//   requests, within the deadline and paid from the retry budget;
// - at most `maxInformational` informational (1xx) heads per attempt.
//
// Protocol-neutral: nothing here is HTTP/1. Body parts are opaque values with a size; the
// driver writes heads and formats headers. Tested as scripts of events in
// Tests/MeshCoreTests/ExchangeStateMachineTests.swift.

public struct ExchangeStateMachine<Part: ExchangeBodyPart, Budgets: ExchangeBudgets> {
    private enum Phase {
        case idle
        /// Waiting for discovery's first answer, until the given time.
        case binding(until: UInt64)
        /// Between attempts, or waiting for the driver's pick.
        case between
        case leasing
        case connected
        /// Reading away a retryable response before trying again, until the given time (a
        /// response that takes longer, or is larger, has its connection closed instead).
        case discarding(until: UInt64)
        case backingOff(until: UInt64)
        case finished
    }

    public let policy: ExchangePolicy
    public let startedAt: UInt64
    private let budgets: Budgets
    private var phase: Phase = .idle
    private var random: SplitMix64
    private var backoff: Backoff

    // The current attempt.
    private var attemptOpen = false
    private var attemptStartedAt: UInt64 = 0
    private var attemptIsProbe = false
    /// When the current attempt times out; nil once its response head arrived.
    private var attemptEndsAt: UInt64?
    private var attemptEndpoint: Endpoint.Address?
    private var connectionReused = false
    private var informational = 0
    private var tried: Set<Endpoint.Address> = []
    private var staleResendsLeft: Int

    // The request body: parts not yet sent on this attempt and, while the body fits the retry
    // buffer, the parts already sent (so that a retry can send them again).
    private var body: [Part] = []
    private var sentParts = 0
    private var keepForReplay = true
    private var bodyReceived = false
    /// Body bytes of the retryable response being read away.
    private var discardedBytes = 0
    /// The kept parts' bytes plus a per-part overhead, bounded by twice `retryBufferBytes`.
    private var keptCost = 0
    /// The client has sent the whole request.
    public private(set) var requestEnded = false
    /// Whether the body parts received so far are kept for a replay.
    public var keepsBodyForReplay: Bool { keepForReplay }
    /// The whole request went out on the current connection.
    private var requestSent = false
    /// The response head went to the client (meshd's own or the upstream's).
    public private(set) var responseStarted = false
    public private(set) var summary = ExchangeSummary()

    public init(policy: ExchangePolicy, budgets: Budgets, startedAt: UInt64, seed: UInt64) {
        self.policy = policy
        self.budgets = budgets
        self.startedAt = startedAt
        self.random = SplitMix64(seed: seed)
        self.backoff = Backoff(policy.backoff.kind)
        self.staleResendsLeft = policy.maxStaleResends
    }

    // MARK: what the driver asks

    /// When the machine wants a `.timerFired`: the earliest of the deadline, the attempt's
    /// timeout, the end of a backoff and the binding timeout that still apply. nil: no timer.
    public var wakeUp: UInt64? {
        let deadline = responseStarted ? nil : policy.deadline?.at
        let other: UInt64?
        switch phase {
        case .idle, .finished: return nil
        case .binding(let until), .backingOff(let until), .discarding(let until): other = until
        case .leasing, .connected: other = attemptEndsAt
        case .between: other = nil
        }
        switch (deadline, other) {
        case (let a?, let b?): return min(a, b)
        case (let a?, nil): return a
        case (nil, let b): return b
        }
    }

    /// Whether reads from the client should wait for a connection (when connected, the driver
    /// also holds them while the upstream cannot take more).
    public var waitsForConnection: Bool {
        switch phase {
        case .idle, .binding, .between, .leasing, .backingOff: return true
        case .connected, .discarding, .finished: return false
        }
    }

    public var isConnected: Bool {
        if case .connected = phase { return true }
        return false
    }

    public var isFinished: Bool {
        if case .finished = phase { return true }
        return false
    }

    /// The client was told to wait for 100 Continue and has sent none of its body: after the
    /// answer, its connection cannot be trusted to carry another request.
    public var clientMayStillSendBody: Bool {
        !requestEnded && policy.expectsContinue && !bodyReceived
    }

    // MARK: events

    /// The request head arrived and was routed. `bindingPending`: discovery has not answered
    /// for the bound name yet.
    public mutating func start(now: UInt64, bindingPending: Bool) -> ExchangeStep<Part> {
        guard case .idle = phase else { return ExchangeStep() }
        phase = .between
        if let deadline = policy.deadline, deadline.at <= now { return timedOut(deadline, now: now) }
        var step = ExchangeStep<Part>()
        if bindingPending {
            phase = .binding(until: now.saturatingAdding(policy.bindingTimeout))
            step.action = .awaitBinding
        } else {
            step.action = .pick(avoiding: tried)
        }
        return step
    }

    /// Discovery answered for the bound name.
    public mutating func bound(now: UInt64) -> ExchangeStep<Part> {
        guard case .binding = phase else { return ExchangeStep() }
        phase = .between
        var step = ExchangeStep<Part>()
        step.action = .pick(avoiding: tried)
        return step
    }

    /// The driver picked `endpoint` (counted against its load); `probe`: the probe of an
    /// ejected endpoint.
    public mutating func picked(_ endpoint: Endpoint.Address, probe: Bool, now: UInt64) -> ExchangeStep<Part> {
        guard case .between = phase else { return ExchangeStep() }
        attemptOpen = true
        attemptStartedAt = now
        attemptIsProbe = probe
        attemptEndpoint = endpoint
        attemptEndsAt = policy.attemptTimeout.map { now.saturatingAdding($0) }
        summary.attempts += 1
        phase = .leasing
        var step = ExchangeStep<Part>()
        step.action = .lease
        return step
    }

    /// No endpoint to pick.
    public mutating func pickFailed(_ error: any Error, now: UInt64) -> ExchangeStep<Part> {
        guard case .between = phase else { return ExchangeStep() }
        return fail(.noRoute(error), now: now)
    }

    /// A connection for the attempt. `reused`: it carried exchanges before (so it may turn out
    /// closed by the upstream meanwhile).
    public mutating func leaseGranted(reused: Bool, now: UInt64) -> ExchangeStep<Part> {
        guard case .leasing = phase else {
            // Not wanted any more (the driver should have cancelled the lease).
            var step = ExchangeStep<Part>()
            step.connection = .returnIfClean
            return step
        }
        phase = .connected
        connectionReused = reused
        informational = 0
        var step = ExchangeStep<Part>()
        step.action = .send(parts: body[sentParts...], end: requestEnded, deadlineWithin: deadlineToPassOn(now: now))
        sentParts = body.count
        if !keepForReplay {
            body.removeAll()
            sentParts = 0
        }
        if requestEnded { requestSent = true }
        return step
    }

    /// No connection. `requeueable`: the request was never sent (a connect failure), so it
    /// may go elsewhere. `connectTimedOut`: the connect timed out (counted).
    public mutating func leaseFailed(_ error: any Error, requeueable: Bool, connectTimedOut: Bool, now: UInt64) -> ExchangeStep<Part> {
        guard case .leasing = phase else { return ExchangeStep() }
        phase = .between
        guard requeueable else { return fail(.lease(error), now: now) }
        var step = ExchangeStep<Part>()
        if connectTimedOut { step.counters.insert(.connectTimedOut) }
        step.outcome = endAttempt(success: false, now: now)
        if let endpoint = attemptEndpoint { tried.insert(endpoint) }
        if summary.requeues < policy.maxRequeues, !deadlinePassed(now) {
            if budgets.tryRequeue(now: now) {
                summary.requeues += 1
                step.counters.insert(.requeued)
                step.action = .pick(avoiding: tried)
                return step
            }
            step.counters.insert(.requeueRefused)
        }
        return fail(.lease(error), now: now, into: step)
    }

    /// A part of the request body from the client.
    public mutating func requestBody(_ part: Part) -> ExchangeStep<Part> {
        var step = ExchangeStep<Part>()
        if case .finished = phase { return step }
        bodyReceived = true
        summary.requestBytes += part.byteCount
        body.append(part)
        keptCost += part.byteCount + policy.partOverheadBytes
        // The bytes decide (a body up to `retryBufferBytes` is kept), and the cost with the
        // per-part overhead may be at most twice that (many tiny chunks).
        if keepForReplay && (summary.requestBytes > policy.retryBufferBytes || keptCost > 2 * policy.retryBufferBytes) {
            // Too large to keep: this request will not be replayed; drop what was sent.
            keepForReplay = false
            body.removeFirst(sentParts)
            sentParts = 0
        }
        guard case .connected = phase else { return step }
        step.action = .sendBody(part)
        if keepForReplay {
            sentParts = body.count
        } else {
            body.removeAll()
        }
        return step
    }

    /// The client sent the end of the request (the driver keeps any trailers).
    public mutating func requestEnd() -> ExchangeStep<Part> {
        var step = ExchangeStep<Part>()
        if case .finished = phase { return step }
        requestEnded = true
        if case .connected = phase {
            requestSent = true
            step.action = .sendEnd
        }
        return step
    }

    /// The upstream's response head. `upstreamSaysRetryable`: it carries `l5d-retryable: true`.
    public mutating func responseHead(status: Int, upstreamSaysRetryable: Bool, now: UInt64) -> ExchangeStep<Part> {
        guard case .connected = phase else { return ExchangeStep() }
        if status < 200 && status != 101 {
            informational += 1
            guard informational <= policy.maxInformational else {
                return upstreamFailed(ExchangeViolation.tooManyInformational(limit: policy.maxInformational), nothingReceived: false, now: now)
            }
            var step = ExchangeStep<Part>()
            step.action = .forwardInformational
            return step
        }
        if status == 101 { return upstreamFailed(ExchangeViolation.switchedProtocols, nothingReceived: false, now: now) }
        attemptEndsAt = nil
        let responseClass = policy.classifier.classify(method: policy.method, status: status, upstreamSaysRetryable: upstreamSaysRetryable)
        var step = ExchangeStep<Part>()
        if responseClass.isRetryable, mayRetry(now: now, counters: &step.counters) {
            step.outcome = endAttempt(success: false, now: now)
            phase = .discarding(until: now.saturatingAdding(policy.maxDiscardTime))
            discardedBytes = 0
            return step
        }
        summary.status = status
        summary.responseClass = responseClass
        summary.endpointSucceeded = responseClass.isSuccess
        responseStarted = true
        step.action = .forwardHead(responseClass)
        return step
    }

    /// A part of the response body: whether to forward it (false while a retryable response
    /// is read away).
    public mutating func responseBody(byteCount: Int) -> Bool {
        switch phase {
        case .connected:
            summary.responseBytes += byteCount
            return true
        case .discarding:
            discardedBytes += byteCount
            // Too much to read away: the discard's time is up (`wakeUp` is now).
            if discardedBytes > policy.maxDiscardBytes { phase = .discarding(until: 0) }
            return false
        default:
            return false
        }
    }

    /// The end of the response. `reclassified`: the class its end gives it (gRPC's status in
    /// trailers), when that differs from the head's.
    public mutating func responseEnd(reclassified: ResponseClass? = nil, now: UInt64) -> ExchangeStep<Part> {
        switch phase {
        case .discarding:
            var step = ExchangeStep<Part>()
            step.connection = requestSent ? .returnIfClean : .close
            phase = .between
            return retryAfterBackoff(now: now, into: step)
        case .connected:
            if let reclassified {
                summary.responseClass = reclassified
                summary.endpointSucceeded = reclassified.isSuccess
            }
            var step = ExchangeStep<Part>()
            step.connection = requestSent ? .returnIfClean : .close
            step.action = .endResponse
            return finish(now: now, into: step)
        default:
            return ExchangeStep()
        }
    }

    /// The upstream broke the exchange: a reset, a close before the response's end, an invalid
    /// response. `nothingReceived`: no byte of the response had arrived.
    public mutating func upstreamFailed(_ error: any Error, nothingReceived: Bool, now: UInt64) -> ExchangeStep<Part> {
        var step = ExchangeStep<Part>()
        switch phase {
        case .discarding:
            step.connection = .close
            phase = .between
            return retryAfterBackoff(now: now, into: step)
        case .connected:
            step.connection = .close
            phase = .between
            guard !responseStarted else {
                // The response has begun: the only honest signal left is to break the stream.
                summary.endpointSucceeded = false
                step.action = .abortDownstream
                return finish(now: now, into: step)
            }
            // A pooled connection the upstream had already closed: most likely the request
            // never got there, but that cannot be known, so only bodiless idempotent requests go
            // again — within the deadline and paid from the retry budget (not from maxRetries).
            if connectionReused, nothingReceived, staleResendsLeft > 0, !policy.declaresBody, requestEnded, policy.idempotent,
               !deadlinePassed(now), budgets.tryRetry(now: now) {
                staleResendsLeft -= 1
                requestSent = false
                sentParts = 0
                phase = .leasing
                step.action = .lease
                return step
            }
            attemptEndsAt = nil
            let responseClass = policy.classifier.classify(method: policy.method, status: nil)
            if responseClass.isRetryable, mayRetry(now: now, counters: &step.counters) {
                step.outcome = endAttempt(success: false, now: now)
                return retryAfterBackoff(now: now, into: step)
            }
            return fail(.upstream(error), now: now, into: step)
        default:
            return step
        }
    }

    /// The time `wakeUp` asked for (or later) has come.
    public mutating func timerFired(now: UInt64) -> ExchangeStep<Part> {
        if case .finished = phase { return ExchangeStep() }
        if let deadline = policy.deadline, !responseStarted, now >= deadline.at { return timedOut(deadline, now: now) }
        switch phase {
        case .binding(let until) where now >= until:
            return fail(.bindingTimeout(policy.bindingTimeout), now: now)
        case .backingOff(let until) where now >= until:
            phase = .between
            var step = ExchangeStep<Part>()
            step.action = .pick(avoiding: tried)
            return step
        case .leasing, .connected:
            guard let endsAt = attemptEndsAt, now >= endsAt else { return ExchangeStep() }
            return attemptTimedOut(now: now)
        case .discarding(let until) where now >= until:
            // The retryable response is slow or large: drop its connection, retry now.
            var step = ExchangeStep<Part>()
            step.connection = .close
            phase = .between
            return retryAfterBackoff(now: now, into: step)
        default:
            return ExchangeStep()
        }
    }

    /// The client went away: give everything back.
    public mutating func downstreamClosed(now: UInt64) -> ExchangeStep<Part> {
        if case .finished = phase { return ExchangeStep() }
        var step = ExchangeStep<Part>()
        step.connection = disposal(of: phase)
        if !responseStarted { summary.endpointSucceeded = nil }
        step.action = .abandon
        return finish(now: now, into: step)
    }

    /// The client's byte stream broke mid-request: answered, unless the response had begun (then
    /// the stream just ends).
    public mutating func downstreamFailed(_ error: any Error, now: UInt64) -> ExchangeStep<Part> {
        if case .finished = phase { return ExchangeStep() }
        guard !responseStarted else { return downstreamClosed(now: now) }
        return fail(.client(error), now: now)
    }

    // MARK: retries and timeouts

    private func deadlinePassed(_ now: UInt64) -> Bool {
        policy.deadline.map { now >= $0.at } ?? false
    }

    /// The deadline the next hop is told: the earliest of ours and this attempt's.
    private func deadlineToPassOn(now: UInt64) -> UInt64? {
        var earliest = policy.deadline?.at
        if let attemptEndsAt, earliest.map({ attemptEndsAt < $0 }) ?? true { earliest = attemptEndsAt }
        return earliest.map { $0 &- min($0, now) }
    }

    /// Whether a retryable failure may be retried now; takes the retry from the budget.
    private mutating func mayRetry(now: UInt64, counters: inout ExchangeCounters) -> Bool {
        guard !responseStarted, requestEnded, keepForReplay, !deadlinePassed(now) else { return false }
        guard summary.retries < policy.maxRetries else {
            counters.insert(.retriesLimited)
            return false
        }
        guard budgets.tryRetry(now: now) else { return false }
        summary.retries += 1
        return true
    }

    /// Sends the request again after the backoff.
    private mutating func retryAfterBackoff(now: UInt64, into step: ExchangeStep<Part>) -> ExchangeStep<Part> {
        var step = step
        if let outcome = endAttempt(success: false, now: now) { step.outcome = outcome }
        if let endpoint = attemptEndpoint { tried.insert(endpoint) }
        requestSent = false
        sentParts = 0
        let wait = backoff.next(using: &random)
        if wait == 0 {
            phase = .between
            step.action = .pick(avoiding: tried)
        } else {
            phase = .backingOff(until: now.saturatingAdding(wait))
        }
        return step
    }

    /// The attempt in flight had no response head within the attempt timeout.
    private mutating func attemptTimedOut(now: UInt64) -> ExchangeStep<Part> {
        var step = ExchangeStep<Part>()
        step.counters.insert(.attemptTimedOut)
        // Waiting in meshd's own pool queue says nothing about the endpoint.
        let blame = isConnected
        step.connection = disposal(of: phase)
        phase = .between
        step.outcome = endAttempt(success: blame ? false : nil, now: now)
        let responseClass = policy.classifier.classify(method: policy.method, status: nil)
        if responseClass.isRetryable, mayRetry(now: now, counters: &step.counters) {
            return retryAfterBackoff(now: now, into: step)
        }
        return fail(.attemptTimeout(policy.attemptTimeout ?? 0), now: now, into: step)
    }

    /// The deadline for the response head passed: whatever is in flight is cancelled.
    private mutating func timedOut(_ deadline: ExchangeDeadline, now: UInt64) -> ExchangeStep<Part> {
        var step = ExchangeStep<Part>()
        step.counters.insert(deadline.kind == .caller ? .deadlineExceeded : .totalTimedOut)
        step.connection = disposal(of: phase)
        phase = .between
        // Our own deadline passing says nothing about the endpoint.
        step.outcome = endAttempt(success: nil, now: now)
        return fail(.deadline(deadline, elapsed: now &- min(now, startedAt)), now: now, into: step)
    }

    /// What to do with what the phase holds when the exchange stops using it.
    private func disposal(of phase: Phase) -> ConnectionDisposal? {
        switch phase {
        case .leasing: return .cancelLease
        case .connected, .discarding: return .close
        default: return nil
        }
    }

    /// The current attempt's outcome (once per attempt).
    private mutating func endAttempt(success: Bool?, now: UInt64) -> AttemptOutcome? {
        attemptEndsAt = nil
        guard attemptOpen else { return nil }
        attemptOpen = false
        return AttemptOutcome(success: success, probe: attemptIsProbe, latency: now &- min(now, attemptStartedAt))
    }

    // MARK: ending

    /// Answers with meshd's own response instead of the upstream's.
    private mutating func fail(_ failure: ExchangeFailure, now: UInt64, into step: ExchangeStep<Part> = ExchangeStep()) -> ExchangeStep<Part> {
        var step = step
        if step.connection == nil { step.connection = disposal(of: phase) }
        summary.endpointSucceeded = failure.endpointSuccess
        summary.status = nil
        responseStarted = true
        step.action = .respond(failure)
        return finish(now: now, into: step)
    }

    private mutating func finish(now: UInt64, into step: ExchangeStep<Part>) -> ExchangeStep<Part> {
        var step = step
        phase = .finished
        body.removeAll()
        if let outcome = endAttempt(success: summary.endpointSucceeded, now: now) { step.outcome = outcome }
        return step
    }
}
