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

/// A part of a request body as the machine holds it for replay: only its size matters here.
public protocol ExchangeBodyPart {
    var byteCount: Int { get }
}

/// The shared budgets an exchange draws on; the driver's adapter counts refusals in metrics.
public protocol ExchangeBudgets {
    /// Takes a retry from the service's retry budget.
    func tryRetry(now: UInt64) -> Bool
    /// Takes a requeue from the client's requeue budget.
    func tryRequeue(now: UInt64) -> Bool
}

/// By when (uptime nanoseconds) the response head must arrive, and whose limit that is.
public struct ExchangeDeadline: Sendable, Hashable {
    public enum Kind: Sendable, Hashable {
        /// meshd's own limit: the service's `totalTimeoutMs` or the listener's `timeoutMs`.
        case total
        /// The caller's `l5d-ctx-deadline`.
        case caller
    }

    public var at: UInt64
    public var kind: Kind
    /// Which limit, for the answer: "the total timeout of 500 ms".
    public var description: String

    public init(at: UInt64, kind: Kind, description: String) {
        self.at = at
        self.kind = kind
        self.description = description
    }

    /// The earliest of the limits that apply to a request that started at `start`.
    /// `callerRemaining`: nanoseconds left of the caller's deadline, if it sent one.
    public static func earliest(start: UInt64, totalTimeoutMs: Int?, listenerTimeoutMs: Int?, callerRemaining: UInt64?) -> ExchangeDeadline? {
        var earliest: ExchangeDeadline?
        func consider(_ candidate: ExchangeDeadline) {
            if earliest == nil || candidate.at < earliest!.at { earliest = candidate }
        }
        if let total = totalTimeoutMs {
            consider(ExchangeDeadline(at: start.saturatingAdding(UInt64(max(total, 0)) &* 1_000_000), kind: .total, description: "the total timeout of \(total) ms"))
        }
        if let listener = listenerTimeoutMs {
            consider(ExchangeDeadline(at: start.saturatingAdding(UInt64(max(listener, 0)) &* 1_000_000), kind: .total, description: "the listener's timeout of \(listener) ms"))
        }
        if let callerRemaining {
            consider(ExchangeDeadline(at: start.saturatingAdding(callerRemaining), kind: .caller, description: "the request's l5d-ctx-deadline"))
        }
        return earliest
    }
}

/// What one request is allowed: its limits and what the classifier needs to know of it.
public struct ExchangePolicy: Sendable {
    public var deadline: ExchangeDeadline?
    /// `requestAttemptTimeoutMs`, in nanoseconds.
    public var attemptTimeout: UInt64?
    /// `bindingTimeoutMs`, in nanoseconds: how long to wait for discovery's first answer.
    public var bindingTimeout: UInt64
    public var maxRetries: Int
    public var retryBufferBytes: Int
    public var backoff: Backoff
    public var classifier: ResponseClassifier
    public var method: String
    public var idempotent: Bool
    /// The request declares a body (a length or chunked framing); bodiless ones may be resent
    /// on a stale connection.
    public var declaresBody: Bool
    /// The client waits for 100 Continue before it sends its body.
    public var expectsContinue: Bool
    public var maxRequeues = 3
    public var maxStaleResends = 2
    public var maxInformational = 16

    public init(
        deadline: ExchangeDeadline?, attemptTimeout: UInt64?, bindingTimeout: UInt64, maxRetries: Int, retryBufferBytes: Int,
        backoff: Backoff, classifier: ResponseClassifier, method: String, idempotent: Bool, declaresBody: Bool, expectsContinue: Bool
    ) {
        self.deadline = deadline
        self.attemptTimeout = attemptTimeout
        self.bindingTimeout = bindingTimeout
        self.maxRetries = maxRetries
        self.retryBufferBytes = retryBufferBytes
        self.backoff = backoff
        self.classifier = classifier
        self.method = method
        self.idempotent = idempotent
        self.declaresBody = declaresBody
        self.expectsContinue = expectsContinue
    }
}

/// Why meshd answers the request itself.
public enum ExchangeFailure {
    /// The pick found no endpoint (or an invalid one); the driver's error explains it.
    case noRoute(any Error)
    /// Discovery did not answer within the binding timeout (nanoseconds).
    case bindingTimeout(UInt64)
    /// No connection: a connect failure that could not be requeued, or the pool refused.
    case lease(any Error)
    /// The upstream broke the exchange before the response head.
    case upstream(any Error)
    /// The attempt had no response head within the attempt timeout (nanoseconds).
    case attemptTimeout(UInt64)
    /// The deadline passed, `elapsed` nanoseconds after the request started.
    case deadline(ExchangeDeadline, elapsed: UInt64)
    /// The client's byte stream broke before the response began.
    case client(any Error)

    /// What the failure says about the endpoint (for failure accrual): nil says nothing.
    var endpointSuccess: Bool? {
        if case .upstream = self { return false }
        return nil
    }
}

/// What the upstream did that no exchange accepts.
public enum ExchangeViolation: Error, Hashable, Sendable, CustomStringConvertible {
    case tooManyInformational(limit: Int)
    case switchedProtocols

    public var description: String {
        switch self {
        case .tooManyInformational(let limit): return "the upstream sent more than \(limit) informational (1xx) responses to one request"
        case .switchedProtocols: return "the upstream switched protocols (101), which meshd does not proxy yet"
        }
    }
}

/// The end of an attempt, for the balancer (load, latency, failure accrual) of the endpoint the
/// driver picked for it.
public struct AttemptOutcome: Sendable, Hashable {
    /// What the attempt says about its endpoint: nil says nothing.
    public var success: Bool?
    public var probe: Bool
    public var latency: UInt64
}

/// What to do with the connection (or the lease) the exchange holds.
public enum ConnectionDisposal: Sendable, Hashable {
    /// Stop waiting for the pool.
    case cancelLease
    /// Back to the pool if the connection is still fit for reuse (the driver knows its framing
    /// state); closed otherwise.
    case returnIfClean
    /// Closed: it carried a failed, cancelled or half-sent exchange.
    case close
}

/// Events worth counting, for the service's metrics.
public struct ExchangeCounters: OptionSet, Sendable, Hashable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let connectTimedOut = ExchangeCounters(rawValue: 1 << 0)
    public static let attemptTimedOut = ExchangeCounters(rawValue: 1 << 1)
    public static let totalTimedOut = ExchangeCounters(rawValue: 1 << 2)
    public static let deadlineExceeded = ExchangeCounters(rawValue: 1 << 3)
    public static let requeued = ExchangeCounters(rawValue: 1 << 4)
    /// A requeue the budget refused.
    public static let requeueRefused = ExchangeCounters(rawValue: 1 << 5)
    /// A retry refused by `maxRetries` (the budget counts its own refusals).
    public static let retriesLimited = ExchangeCounters(rawValue: 1 << 6)
}

/// The main thing the driver does next.
public enum ExchangeAction<Part> {
    case none
    /// Wait for discovery's first answer, then send `.bound`.
    case awaitBinding
    /// Pick an endpoint (preferring ones not in `avoiding`), then send `.picked` or `.pickFailed`.
    case pick(avoiding: Set<Endpoint.Address>)
    /// Lease a connection from the picked endpoint's pool, then send `.leaseGranted` or `.leaseFailed`.
    case lease
    /// Send the request head, these body parts and, when `end`, the end of the request.
    /// `deadlineWithin`: the next hop must answer within this many nanoseconds (nil: no limit
    /// of meshd's own; the caller's deadline, if any, goes on unchanged).
    case send(parts: ArraySlice<Part>, end: Bool, deadlineWithin: UInt64?)
    case sendBody(Part)
    case sendEnd
    /// Pass the informational (1xx) head on to the client, if its protocol can carry it.
    case forwardInformational
    /// Pass the response head on to the client, classified.
    case forwardHead(ResponseClass)
    /// The response is complete: end it to the client. The exchange is finished.
    case endResponse
    /// Answer the client with meshd's own response. The exchange is finished.
    case respond(ExchangeFailure)
    /// The response began and cannot be completed: break the client's stream. Finished.
    case abortDownstream
    /// The client went away: nothing to write. Finished.
    case abandon

    /// Whether the exchange is finished after this action.
    public var finishes: Bool {
        switch self {
        case .endResponse, .respond, .abortDownstream, .abandon: return true
        default: return false
        }
    }
}

/// One step for the driver, to take in this order: count, dispose of the connection, report the
/// attempt's outcome, then act (the action may lead to the next event).
public struct ExchangeStep<Part> {
    public var counters: ExchangeCounters = []
    public var connection: ConnectionDisposal?
    public var outcome: AttemptOutcome?
    public var action: ExchangeAction<Part> = .none

    public init() {}
}

/// The request as it ended, for its record.
public struct ExchangeSummary: Sendable, Hashable {
    public var attempts = 0
    public var retries = 0
    public var requeues = 0
    public var requestBytes = 0
    public var responseBytes = 0
    /// The upstream's final status, when its response was forwarded.
    public var status: Int?
    public var responseClass: ResponseClass?
    /// What the final attempt says about its endpoint.
    public var endpointSucceeded: Bool?

    public init(
        attempts: Int = 0, retries: Int = 0, requeues: Int = 0, requestBytes: Int = 0, responseBytes: Int = 0, status: Int? = nil,
        responseClass: ResponseClass? = nil, endpointSucceeded: Bool? = nil
    ) {
        self.attempts = attempts
        self.retries = retries
        self.requeues = requeues
        self.requestBytes = requestBytes
        self.responseBytes = responseBytes
        self.status = status
        self.responseClass = responseClass
        self.endpointSucceeded = endpointSucceeded
    }
}

public struct ExchangeStateMachine<Part: ExchangeBodyPart, Budgets: ExchangeBudgets> {
    private enum Phase {
        case idle
        /// Waiting for discovery's first answer, until the given time.
        case binding(until: UInt64)
        /// Between attempts, or waiting for the driver's pick.
        case between
        case leasing
        case connected
        /// Reading away a retryable response before trying again.
        case discarding
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
    /// The client has sent the whole request.
    public private(set) var requestEnded = false
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
        case .binding(let until), .backingOff(let until): other = until
        case .leasing, .connected: other = attemptEndsAt
        case .between, .discarding: other = nil
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
        if keepForReplay && summary.requestBytes > policy.retryBufferBytes {
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
            phase = .discarding
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
        guard case .connected = phase else { return false }
        summary.responseBytes += byteCount
        return true
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
