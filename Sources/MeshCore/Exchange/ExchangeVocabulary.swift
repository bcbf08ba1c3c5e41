// The vocabulary of an exchange (ExchangeStateMachine.swift): what a request is allowed
// (`ExchangePolicy`, `ExchangeDeadline`), what the machine tells its driver (`ExchangeStep`:
// counters, a connection disposal, an attempt's outcome, an action), why it answers itself
// (`ExchangeFailure`) and how the request ended (`ExchangeSummary`). Pure values.

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

    /// Which limit it is. A plain value: the words for an answer are only made when one is
    /// given (building them for every request cost a string per request).
    public enum Source: Sendable, Hashable {
        case totalTimeout(ms: Int)
        case listenerTimeout(ms: Int)
        case caller
    }

    public var at: UInt64
    public var source: Source

    public init(at: UInt64, source: Source) {
        self.at = at
        self.source = source
    }

    public var kind: Kind {
        if case .caller = source { return .caller }
        return .total
    }

    /// Which limit, for the answer: "the total timeout of 500 ms".
    public var description: String {
        switch source {
        case .totalTimeout(let ms): return "the total timeout of \(ms) ms"
        case .listenerTimeout(let ms): return "the listener's timeout of \(ms) ms"
        case .caller: return "the request's l5d-ctx-deadline"
        }
    }

    /// The earliest of the limits that apply to a request that started at `start`.
    /// `callerRemaining`: nanoseconds left of the caller's deadline, if it sent one.
    public static func earliest(start: UInt64, totalTimeoutMs: Int?, listenerTimeoutMs: Int?, callerRemaining: UInt64?) -> ExchangeDeadline? {
        var earliest: ExchangeDeadline?
        func consider(_ candidate: ExchangeDeadline) {
            if earliest == nil || candidate.at < earliest!.at { earliest = candidate }
        }
        if let total = totalTimeoutMs {
            consider(ExchangeDeadline(at: start.saturatingAdding(UInt64(milliseconds: total)), source: .totalTimeout(ms: total)))
        }
        if let listener = listenerTimeoutMs {
            consider(ExchangeDeadline(at: start.saturatingAdding(UInt64(milliseconds: listener)), source: .listenerTimeout(ms: listener)))
        }
        if let callerRemaining {
            consider(ExchangeDeadline(at: start.saturatingAdding(callerRemaining), source: .caller))
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
    /// A retryable response is read away (so that its connection can be reused) for at most
    /// this long and this many body bytes; past either, its connection closes and the retry goes.
    public var maxDiscardTime: UInt64 = 1_000_000_000
    public var maxDiscardBytes = 64 * 1024
    /// What keeping one body part for replay is charged beyond its bytes (its slot, its buffer's
    /// header): parts are kept while their bytes fit `retryBufferBytes` and their cost twice
    /// that, so that many tiny chunks cannot hold far more memory than the buffer's size.
    public var partOverheadBytes = 64

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


extension UInt64 {
    /// Milliseconds (a config value) as nanoseconds: negative is 0, too large is `.max`.
    public init(milliseconds: Int) {
        let (product, overflow) = UInt64(Swift.max(milliseconds, 0)).multipliedReportingOverflow(by: 1_000_000)
        self = overflow ? .max : product
    }
}
