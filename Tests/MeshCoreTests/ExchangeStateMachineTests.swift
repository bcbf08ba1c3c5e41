import MeshCore
import Testing

/// The exchange as scripts of events and the steps they must produce. Steps are rendered as
/// one line each — "counters | connection | outcome | action" — so that a script reads as the
/// driver would carry it out.
@Suite struct ExchangeStateMachineTests {
    struct Part: ExchangeBodyPart, CustomStringConvertible {
        var name: String
        var byteCount: Int
        var description: String { name }
    }

    final class Budgets: ExchangeBudgets {
        var retries: Int
        var requeues: Int
        var retriesTaken = 0
        init(retries: Int = 100, requeues: Int = 100) {
            self.retries = retries
            self.requeues = requeues
        }
        func tryRetry(now: UInt64) -> Bool {
            guard retries > 0 else { return false }
            retries -= 1
            retriesTaken += 1
            return true
        }
        func tryRequeue(now: UInt64) -> Bool {
            guard requeues > 0 else { return false }
            requeues -= 1
            return true
        }
    }

    typealias Machine = ExchangeStateMachine<Part, Budgets>

    static let a = Endpoint.Address(host: "10.0.0.1", port: 80)
    static let b = Endpoint.Address(host: "10.0.0.2", port: 80)
    static let ms: UInt64 = 1_000_000

    static func policy(
        method: String = "GET", classifier: ResponseClassifier = .retryableRead5XX, deadline: ExchangeDeadline? = nil,
        attemptTimeoutMs: UInt64? = nil, maxRetries: Int = 25, retryBufferBytes: Int = 8192, backoff: Backoff.Kind = .constant(nanoseconds: 0),
        declaresBody: Bool = false, expectsContinue: Bool = false
    ) -> ExchangePolicy {
        ExchangePolicy(
            deadline: deadline, attemptTimeout: attemptTimeoutMs.map { $0 * ms }, bindingTimeout: 10_000 * ms, maxRetries: maxRetries,
            retryBufferBytes: retryBufferBytes, backoff: Backoff(backoff), classifier: classifier, method: method,
            idempotent: ResponseClassifier.idempotentMethods.contains(method), declaresBody: declaresBody, expectsContinue: expectsContinue
        )
    }

    static func machine(_ policy: ExchangePolicy = policy(), budgets: Budgets = Budgets(), start: UInt64 = 1_000 * ms) -> Machine {
        Machine(policy: policy, budgets: budgets, startedAt: start, seed: 42)
    }

    /// One line per step.
    static func render(_ step: ExchangeStep<Part>) -> String {
        var fields: [String] = []
        if !step.counters.isEmpty {
            let names: [(ExchangeCounters, String)] = [
                (.connectTimedOut, "connectTimedOut"), (.attemptTimedOut, "attemptTimedOut"), (.totalTimedOut, "totalTimedOut"),
                (.deadlineExceeded, "deadlineExceeded"), (.requeued, "requeued"), (.requeueRefused, "requeueRefused"), (.retriesLimited, "retriesLimited"),
            ]
            fields.append(names.filter { step.counters.contains($0.0) }.map(\.1).joined(separator: ","))
        }
        if let connection = step.connection { fields.append("\(connection)") }
        if let outcome = step.outcome {
            fields.append("outcome:\(outcome.success.map { $0 ? "ok" : "failed" } ?? "nil")\(outcome.probe ? ",probe" : "")")
        }
        fields.append(action(step.action))
        return fields.joined(separator: " | ")
    }

    static func action(_ action: ExchangeAction<Part>) -> String {
        switch action {
        case .none: return "none"
        case .awaitBinding: return "awaitBinding"
        case .pick(let avoiding): return "pick(avoiding: \(avoiding.sorted().map(\.description).joined(separator: ",")))"
        case .lease: return "lease"
        case .send(let parts, let end, let within):
            return "send(\(parts.map(\.name).joined(separator: ","))\(end ? ",end" : "")\(within.map { ",within \($0 / ms) ms" } ?? ""))"
        case .sendBody(let part): return "sendBody(\(part.name))"
        case .sendEnd: return "sendEnd"
        case .forwardInformational: return "forwardInformational"
        case .forwardHead(let responseClass): return "forwardHead(\(responseClass))"
        case .endResponse: return "endResponse"
        case .respond(let failure):
            switch failure {
            case .noRoute(let error): return "respond(noRoute: \(error))"
            case .bindingTimeout: return "respond(bindingTimeout)"
            case .lease(let error): return "respond(lease: \(error))"
            case .upstream(let error): return "respond(upstream: \(error))"
            case .attemptTimeout(let ns): return "respond(attemptTimeout \(ns / ms) ms)"
            case .deadline(let deadline, let elapsed): return "respond(deadline \(deadline.kind) after \(elapsed / ms) ms)"
            case .client(let error): return "respond(client: \(error))"
            }
        case .abortDownstream: return "abortDownstream"
        case .abandon: return "abandon"
        }
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    static func part(_ name: String, _ size: Int = 10) -> Part { Part(name: name, byteCount: size) }

    /// Starts a bodiless request and connects its first attempt to `a`, at `now`.
    static func connected(_ machine: inout Machine, now: UInt64 = 1_000 * ms, reused: Bool = false, ended: Bool = true) {
        #expect(render(machine.start(now: now, bindingPending: false)) == "pick(avoiding: )")
        #expect(render(machine.picked(a, probe: false, now: now)) == "lease")
        if ended { #expect(render(machine.requestEnd()) == "none") }
        _ = machine.leaseGranted(reused: reused, now: now)
    }

    // MARK: the plain path

    @Test func aRequestAndItsResponse() {
        var m = Self.machine()
        #expect(Self.render(m.start(now: 1_000 * Self.ms, bindingPending: false)) == "pick(avoiding: )")
        #expect(m.waitsForConnection)
        #expect(Self.render(m.picked(Self.a, probe: false, now: 1_001 * Self.ms)) == "lease")
        #expect(Self.render(m.requestEnd()) == "none")
        #expect(Self.render(m.leaseGranted(reused: false, now: 1_002 * Self.ms)) == "send(,end)")
        #expect(!m.waitsForConnection && m.isConnected)
        #expect(Self.render(m.responseHead(status: 200, upstreamSaysRetryable: false, now: 1_010 * Self.ms)) == "forwardHead(success)")
        #expect(m.responseStarted)
        let forwarded5 = m.responseBody(byteCount: 5)
        #expect(forwarded5)
        #expect(Self.render(m.responseEnd(now: 1_020 * Self.ms)) == "returnIfClean | outcome:ok | endResponse")
        #expect(m.isFinished && m.wakeUp == nil)
        #expect(m.summary == ExchangeSummary(attempts: 1, retries: 0, requeues: 0, requestBytes: 0, responseBytes: 5, status: 200, responseClass: .success, endpointSucceeded: true))
        // Nothing after the end does anything (no second release of the connection).
        #expect(Self.render(m.responseEnd(now: 1_021 * Self.ms)) == "none")
        #expect(Self.render(m.upstreamFailed(Failure("late"), nothingReceived: false, now: 1_022 * Self.ms)) == "none")
        #expect(Self.render(m.downstreamClosed(now: 1_023 * Self.ms)) == "none")
        #expect(Self.render(m.timerFired(now: 9_000 * Self.ms)) == "none")
    }

    @Test func bodyStreamsWhileConnectedAndIsHeldBeforeIt() {
        var m = Self.machine(Self.policy(method: "PUT", declaresBody: true))
        _ = m.start(now: 0, bindingPending: false)
        _ = m.picked(Self.a, probe: false, now: 0)
        #expect(Self.render(m.requestBody(Self.part("b1"))) == "none")
        #expect(Self.render(m.leaseGranted(reused: false, now: 0)) == "send(b1)")
        #expect(Self.render(m.requestBody(Self.part("b2"))) == "sendBody(b2)")
        #expect(Self.render(m.requestEnd()) == "sendEnd")
        #expect(m.summary.requestBytes == 20)
    }

    @Test func anEarlyResponseLeavesTheConnectionUnfitForReuse() {
        var m = Self.machine(Self.policy(method: "POST", declaresBody: true))
        Self.connected(&m, ended: false)
        _ = m.requestBody(Self.part("b1"))
        _ = m.responseHead(status: 413, upstreamSaysRetryable: false, now: 1_005 * Self.ms)
        // The request was not all sent: the connection's framing is unknown.
        #expect(Self.render(m.responseEnd(now: 1_006 * Self.ms)) == "close | outcome:ok | endResponse")
        #expect(m.isFinished && !m.requestEnded)
    }

    // MARK: binding and deadlines

    @Test func bindingTimeoutAnswersWhenDiscoveryDoesNot() {
        var m = Self.machine()
        #expect(Self.render(m.start(now: 1_000 * Self.ms, bindingPending: true)) == "awaitBinding")
        #expect(m.wakeUp == 11_000 * Self.ms)
        #expect(Self.render(m.timerFired(now: 10_999 * Self.ms)) == "none")
        #expect(Self.render(m.timerFired(now: 11_000 * Self.ms)) == "respond(bindingTimeout)")
        #expect(Self.render(m.bound(now: 11_001 * Self.ms)) == "none")
    }

    @Test func boundThenPicked() {
        var m = Self.machine()
        _ = m.start(now: 1_000 * Self.ms, bindingPending: true)
        #expect(Self.render(m.bound(now: 1_001 * Self.ms)) == "pick(avoiding: )")
        #expect(m.wakeUp == nil)
    }

    @Test func aDeadlinePassedAlreadyIsAnsweredAtOnce() {
        let deadline = ExchangeDeadline(at: 1_000 * Self.ms, source: .caller)
        var m = Self.machine(Self.policy(deadline: deadline))
        #expect(Self.render(m.start(now: 1_000 * Self.ms, bindingPending: false)) == "deadlineExceeded | respond(deadline caller after 0 ms)")
    }

    @Test func theDeadlineCancelsTheAttemptInFlight() {
        let deadline = ExchangeDeadline(at: 1_500 * Self.ms, source: .totalTimeout(ms: 500))
        var m = Self.machine(Self.policy(deadline: deadline, attemptTimeoutMs: 2_000))
        Self.connected(&m)
        // The earlier of the deadline and the attempt's timeout.
        #expect(m.wakeUp == 1_500 * Self.ms)
        #expect(Self.render(m.timerFired(now: 1_500 * Self.ms)) == "totalTimedOut | close | outcome:nil | respond(deadline total after 500 ms)")
    }

    @Test func theDeadlineCancelsALeaseAndABackoff() {
        let deadline = ExchangeDeadline(at: 1_500 * Self.ms, source: .caller)
        var m = Self.machine(Self.policy(deadline: deadline))
        _ = m.start(now: 1_000 * Self.ms, bindingPending: false)
        _ = m.picked(Self.a, probe: false, now: 1_000 * Self.ms)
        #expect(Self.render(m.timerFired(now: 1_600 * Self.ms)) == "deadlineExceeded | cancelLease | outcome:nil | respond(deadline caller after 600 ms)")

        var n = Self.machine(Self.policy(deadline: deadline, backoff: .constant(nanoseconds: 200 * Self.ms)))
        Self.connected(&n)
        _ = n.responseHead(status: 503, upstreamSaysRetryable: false, now: 1_100 * Self.ms)
        _ = n.responseEnd(now: 1_100 * Self.ms)
        #expect(n.wakeUp == 1_300 * Self.ms)
        #expect(Self.render(n.timerFired(now: 1_500 * Self.ms)) == "deadlineExceeded | respond(deadline caller after 500 ms)")
    }

    @Test func theDeadlineStopsMatteringOnceTheResponseBegins() {
        let deadline = ExchangeDeadline(at: 1_500 * Self.ms, source: .totalTimeout(ms: 100))
        var m = Self.machine(Self.policy(deadline: deadline))
        Self.connected(&m)
        _ = m.responseHead(status: 200, upstreamSaysRetryable: false, now: 1_100 * Self.ms)
        #expect(m.wakeUp == nil)
        #expect(Self.render(m.timerFired(now: 2_000 * Self.ms)) == "none")
        let forwarded1 = m.responseBody(byteCount: 1)
        #expect(forwarded1)
    }

    @Test func theNextHopIsToldTheEarliestLimit() {
        let deadline = ExchangeDeadline(at: 1_800 * Self.ms, source: .caller)
        var m = Self.machine(Self.policy(deadline: deadline, attemptTimeoutMs: 300))
        _ = m.start(now: 1_000 * Self.ms, bindingPending: false)
        _ = m.picked(Self.a, probe: false, now: 1_000 * Self.ms)
        _ = m.requestEnd()
        // Leased 100 ms after the pick: 200 ms are left of the attempt.
        #expect(Self.render(m.leaseGranted(reused: false, now: 1_100 * Self.ms)) == "send(,end,within 200 ms)")

        var n = Self.machine(Self.policy(deadline: deadline))
        _ = n.start(now: 1_000 * Self.ms, bindingPending: false)
        _ = n.picked(Self.a, probe: false, now: 1_000 * Self.ms)
        #expect(Self.render(n.leaseGranted(reused: false, now: 1_000 * Self.ms)) == "send(,within 800 ms)")
    }

    @Test func deadlinesSaturateInsteadOfOverflowing() {
        let far = ExchangeDeadline.earliest(start: .max - 5, totalTimeoutMs: Int.max, listenerTimeoutMs: nil, callerRemaining: .max)
        #expect(far?.at == .max)
        let chosen = ExchangeDeadline.earliest(start: 0, totalTimeoutMs: 500, listenerTimeoutMs: 300, callerRemaining: 400 * Self.ms)
        #expect(chosen?.at == 300 * Self.ms && chosen?.description == "the listener's timeout of 300 ms")
        #expect(ExchangeDeadline.earliest(start: 0, totalTimeoutMs: nil, listenerTimeoutMs: nil, callerRemaining: nil) == nil)
        // A huge timeout from the config saturates instead of wrapping to a short one.
        #expect(ExchangeDeadline.earliest(start: 0, totalTimeoutMs: Int.max, listenerTimeoutMs: nil, callerRemaining: nil)?.at == .max)
        #expect(UInt64(milliseconds: -5) == 0 && UInt64(milliseconds: 7) == 7_000_000)
    }

    // MARK: attempts

    @Test func attemptTimeoutRetriesAReadElsewhere() {
        var m = Self.machine(Self.policy(attemptTimeoutMs: 100))
        Self.connected(&m)
        #expect(m.wakeUp == 1_100 * Self.ms)
        #expect(Self.render(m.timerFired(now: 1_100 * Self.ms)) == "attemptTimedOut | close | outcome:failed | pick(avoiding: 10.0.0.1:80)")
        #expect(Self.render(m.picked(Self.b, probe: false, now: 1_100 * Self.ms)) == "lease")
        #expect(m.wakeUp == 1_200 * Self.ms)
        #expect(Self.render(m.leaseGranted(reused: false, now: 1_110 * Self.ms)) == "send(,end,within 90 ms)")
        #expect(m.summary.attempts == 2 && m.summary.retries == 1)
    }

    @Test func attemptTimeoutWhileWaitingForThePoolDoesNotBlameTheEndpoint() {
        var m = Self.machine(Self.policy(method: "POST", attemptTimeoutMs: 100))
        _ = m.start(now: 0, bindingPending: false)
        _ = m.picked(Self.a, probe: true, now: 0)
        #expect(Self.render(m.timerFired(now: 100 * Self.ms)) == "attemptTimedOut | cancelLease | outcome:nil,probe | respond(attemptTimeout 100 ms)")
    }

    @Test func theAttemptTimerStopsAtTheResponseHead() {
        var m = Self.machine(Self.policy(attemptTimeoutMs: 100))
        Self.connected(&m)
        _ = m.responseHead(status: 200, upstreamSaysRetryable: false, now: 1_050 * Self.ms)
        #expect(m.wakeUp == nil)
        #expect(Self.render(m.timerFired(now: 1_200 * Self.ms)) == "none")
    }

    // MARK: requeues

    @Test func aConnectFailureRequeuesWhateverTheMethod() {
        let budgets = Budgets(requeues: 1)
        var m = Self.machine(Self.policy(method: "POST", classifier: .nonRetryable5XX), budgets: budgets)
        _ = m.start(now: 0, bindingPending: false)
        _ = m.picked(Self.a, probe: false, now: 0)
        #expect(Self.render(m.leaseFailed(Failure("refused"), requeueable: true, connectTimedOut: false, now: 1)) == "requeued | outcome:failed | pick(avoiding: 10.0.0.1:80)")
        _ = m.picked(Self.b, probe: false, now: 2)
        // The budget is spent: the failure is answered.
        #expect(Self.render(m.leaseFailed(Failure("timed out"), requeueable: true, connectTimedOut: true, now: 3)) == "connectTimedOut,requeueRefused | outcome:failed | respond(lease: timed out)")
        #expect(m.summary.requeues == 1 && m.summary.attempts == 2)
    }

    @Test func requeuesStopAtTheirLimit() {
        var m = Self.machine()
        _ = m.start(now: 0, bindingPending: false)
        for attempt in 0..<3 {
            _ = m.picked(Self.a, probe: false, now: UInt64(attempt))
            let step = m.leaseFailed(Failure("refused"), requeueable: true, connectTimedOut: false, now: UInt64(attempt))
            #expect(step.counters == .requeued)
        }
        _ = m.picked(Self.a, probe: false, now: 9)
        #expect(Self.render(m.leaseFailed(Failure("refused"), requeueable: true, connectTimedOut: false, now: 9)) == "outcome:failed | respond(lease: refused)")
    }

    @Test func aPoolRefusalIsAnsweredWithoutBlame() {
        var m = Self.machine()
        _ = m.start(now: 0, bindingPending: false)
        _ = m.picked(Self.a, probe: false, now: 0)
        #expect(Self.render(m.leaseFailed(Failure("pool full"), requeueable: false, connectTimedOut: false, now: 1)) == "outcome:nil | respond(lease: pool full)")
    }

    @Test func noEndpointsIsAnswered() {
        var m = Self.machine()
        _ = m.start(now: 0, bindingPending: false)
        #expect(Self.render(m.pickFailed(Failure("no endpoints"), now: 0)) == "respond(noRoute: no endpoints)")
        #expect(m.summary.attempts == 0)
    }

    // MARK: retries

    @Test func aRetryableResponseIsReadAwayAndTheRequestReplayed() {
        let budgets = Budgets()
        var m = Self.machine(Self.policy(method: "PUT", classifier: .retryableIdempotent5XX, declaresBody: true), budgets: budgets)
        _ = m.start(now: 0, bindingPending: false)
        _ = m.picked(Self.a, probe: false, now: 0)
        _ = m.leaseGranted(reused: false, now: 0)
        #expect(Self.render(m.requestBody(Self.part("b1"))) == "sendBody(b1)")
        #expect(Self.render(m.requestBody(Self.part("b2"))) == "sendBody(b2)")
        _ = m.requestEnd()
        #expect(Self.render(m.responseHead(status: 503, upstreamSaysRetryable: false, now: 5)) == "outcome:failed | none")
        let forwarded100 = m.responseBody(byteCount: 100)
        #expect(!forwarded100)
        #expect(Self.render(m.responseEnd(now: 6)) == "returnIfClean | pick(avoiding: 10.0.0.1:80)")
        _ = m.picked(Self.b, probe: false, now: 6)
        #expect(Self.render(m.leaseGranted(reused: false, now: 7)) == "send(b1,b2,end)")
        #expect(Self.render(m.responseHead(status: 200, upstreamSaysRetryable: false, now: 8)) == "forwardHead(success)")
        #expect(budgets.retriesTaken == 1 && m.summary.retries == 1 && m.summary.responseBytes == 0)
    }

    @Test func aRetryWaitsForItsBackoff() {
        var m = Self.machine(Self.policy(backoff: .constant(nanoseconds: 50 * Self.ms)))
        Self.connected(&m)
        _ = m.responseHead(status: 502, upstreamSaysRetryable: false, now: 1_010 * Self.ms)
        #expect(Self.render(m.responseEnd(now: 1_010 * Self.ms)) == "returnIfClean | none")
        #expect(m.wakeUp == 1_060 * Self.ms && m.waitsForConnection)
        #expect(Self.render(m.timerFired(now: 1_059 * Self.ms)) == "none")
        #expect(Self.render(m.timerFired(now: 1_060 * Self.ms)) == "pick(avoiding: 10.0.0.1:80)")
    }

    @Test func onlyWhatTheClassifierAllowsIsRetried() {
        var post = Self.machine(Self.policy(method: "POST"))
        Self.connected(&post)
        #expect(Self.render(post.responseHead(status: 503, upstreamSaysRetryable: false, now: 0)) == "forwardHead(failure(retryable: false))")
        // A downstream meshd saying "never reached its upstream" is believed for idempotent methods only.
        var postSays = Self.machine(Self.policy(method: "POST", classifier: .nonRetryable5XX))
        Self.connected(&postSays)
        #expect(Self.render(postSays.responseHead(status: 503, upstreamSaysRetryable: true, now: 0)) == "forwardHead(failure(retryable: false))")
        var getSays = Self.machine(Self.policy(method: "GET", classifier: .nonRetryable5XX))
        Self.connected(&getSays)
        #expect(Self.render(getSays.responseHead(status: 503, upstreamSaysRetryable: true, now: 0)) == "outcome:failed | none")
    }

    @Test func retriesStopAtMaxRetriesAndAtAnEmptyBudget() {
        var m = Self.machine(Self.policy(maxRetries: 1))
        Self.connected(&m)
        _ = m.responseHead(status: 503, upstreamSaysRetryable: false, now: 0)
        _ = m.responseEnd(now: 0)
        _ = m.picked(Self.b, probe: false, now: 0)
        _ = m.leaseGranted(reused: false, now: 0)
        #expect(Self.render(m.responseHead(status: 503, upstreamSaysRetryable: false, now: 0)) == "retriesLimited | forwardHead(failure(retryable: true))")

        var n = Self.machine(budgets: Budgets(retries: 0))
        Self.connected(&n)
        #expect(Self.render(n.responseHead(status: 503, upstreamSaysRetryable: false, now: 0)) == "forwardHead(failure(retryable: true))")
    }

    @Test func aBodyLargerThanTheRetryBufferIsNeverReplayed() {
        var m = Self.machine(Self.policy(method: "PUT", classifier: .retryableAll5XX, retryBufferBytes: 15, declaresBody: true))
        _ = m.start(now: 0, bindingPending: false)
        _ = m.picked(Self.a, probe: false, now: 0)
        _ = m.requestBody(Self.part("b1"))
        _ = m.requestBody(Self.part("b2"))
        // Past the buffer before the connection: only what was not sent is held, and sent once.
        #expect(Self.render(m.leaseGranted(reused: false, now: 0)) == "send(b1,b2)")
        #expect(Self.render(m.requestBody(Self.part("b3"))) == "sendBody(b3)")
        _ = m.requestEnd()
        #expect(Self.render(m.responseHead(status: 503, upstreamSaysRetryable: false, now: 0)) == "forwardHead(failure(retryable: true))")
    }

    @Test func aStreamingBodyIsNotRetried() {
        var m = Self.machine(Self.policy(method: "PUT", classifier: .retryableAll5XX, declaresBody: true))
        Self.connected(&m, ended: false)
        _ = m.requestBody(Self.part("b1"))
        #expect(Self.render(m.responseHead(status: 503, upstreamSaysRetryable: false, now: 0)) == "forwardHead(failure(retryable: true))")
    }

    @Test func noRetryPastTheDeadline() {
        let deadline = ExchangeDeadline(at: 1_100 * Self.ms, source: .totalTimeout(ms: 100))
        var m = Self.machine(Self.policy(deadline: deadline))
        Self.connected(&m)
        #expect(Self.render(m.responseHead(status: 503, upstreamSaysRetryable: false, now: 1_100 * Self.ms)) == "forwardHead(failure(retryable: true))")
    }

    @Test func aFailureWhileReadingAwayRetriesOnAFreshConnection() {
        var m = Self.machine()
        Self.connected(&m)
        _ = m.responseHead(status: 503, upstreamSaysRetryable: false, now: 0)
        #expect(Self.render(m.upstreamFailed(Failure("reset"), nothingReceived: false, now: 1)) == "close | pick(avoiding: 10.0.0.1:80)")
    }

    /// A retryable response that stalls is not waited for: after `maxDiscardTime` its
    /// connection closes and the retry goes.
    @Test func aStalledRetryableResponseIsDroppedAfterTheDiscardTime() {
        var m = Self.machine()
        Self.connected(&m)
        #expect(Self.render(m.responseHead(status: 503, upstreamSaysRetryable: false, now: 1_000 * Self.ms)) == "outcome:failed | none")
        #expect(m.wakeUp == 2_000 * Self.ms)
        #expect(Self.render(m.timerFired(now: 1_999 * Self.ms)) == "none")
        #expect(Self.render(m.timerFired(now: 2_000 * Self.ms)) == "close | pick(avoiding: 10.0.0.1:80)")
    }

    /// One larger than `maxDiscardBytes` is not read to its end either: the discard's time is up
    /// at once, and the timer that fires closes it.
    @Test func aLargeRetryableResponseIsDroppedPastTheDiscardBytes() {
        var m = Self.machine()
        Self.connected(&m)
        _ = m.responseHead(status: 503, upstreamSaysRetryable: false, now: 1_000 * Self.ms)
        let first = m.responseBody(byteCount: 64 * 1024)
        #expect(!first && m.wakeUp == 2_000 * Self.ms)
        let second = m.responseBody(byteCount: 1)
        #expect(!second && m.wakeUp == 0)
        #expect(Self.render(m.timerFired(now: 1_001 * Self.ms)) == "close | pick(avoiding: 10.0.0.1:80)")
    }

    /// Many tiny parts: kept while their bytes fit the buffer and their cost (bytes plus a
    /// per-part overhead) is under twice its size; past that, the request is not replayable.
    @Test func tinyPartsAreChargedTheirOverhead() {
        var m = Self.machine(Self.policy(method: "PUT", classifier: .retryableAll5XX, retryBufferBytes: 1_000, declaresBody: true))
        Self.connected(&m, ended: false)
        for index in 0..<30 { _ = m.requestBody(Self.part("p\(index)", 1)) }
        #expect(m.keepsBodyForReplay)  // 30 × (1 + 64) = 1,950 ≤ 2,000
        _ = m.requestBody(Self.part("p30", 1))
        #expect(!m.keepsBodyForReplay)  // 31 × 65 = 2,015: only 31 bytes, but too many parts
    }

    @Test func aFailedExchangeIsRetriedWhenTheClassifierSaysSo() {
        var m = Self.machine()
        Self.connected(&m)
        #expect(Self.render(m.upstreamFailed(Failure("reset"), nothingReceived: false, now: 1)) == "close | outcome:failed | pick(avoiding: 10.0.0.1:80)")
        var post = Self.machine(Self.policy(method: "POST"))
        Self.connected(&post)
        #expect(Self.render(post.upstreamFailed(Failure("reset"), nothingReceived: false, now: 1)) == "close | outcome:failed | respond(upstream: reset)")
        #expect(post.summary.endpointSucceeded == false)
    }

    // MARK: stale connections

    @Test func aStaleConnectionIsResentForABodilessIdempotentRequest() {
        let budgets = Budgets()
        var m = Self.machine(Self.policy(classifier: .nonRetryable5XX), budgets: budgets)
        Self.connected(&m, reused: true)
        #expect(Self.render(m.upstreamFailed(Failure("closed"), nothingReceived: true, now: 1)) == "close | lease")
        #expect(Self.render(m.leaseGranted(reused: true, now: 1)) == "send(,end)")
        #expect(Self.render(m.upstreamFailed(Failure("closed"), nothingReceived: true, now: 2)) == "close | lease")
        _ = m.leaseGranted(reused: true, now: 2)
        // Twice at most; then the failure is the answer.
        #expect(Self.render(m.upstreamFailed(Failure("closed"), nothingReceived: true, now: 3)) == "close | outcome:failed | respond(upstream: closed)")
        #expect(budgets.retriesTaken == 2 && m.summary.attempts == 1)
    }

    @Test func aStaleConnectionIsNotResentWhenThatMightRunTheRequestTwice() {
        for (policy, reused, nothingReceived) in [
            (Self.policy(method: "POST", classifier: .nonRetryable5XX), true, true),
            (Self.policy(method: "PUT", classifier: .nonRetryable5XX, declaresBody: true), true, true),
            (Self.policy(classifier: .nonRetryable5XX), false, true),
            (Self.policy(classifier: .nonRetryable5XX), true, false),
        ] {
            var m = Self.machine(policy)
            Self.connected(&m, reused: reused)
            #expect(Self.render(m.upstreamFailed(Failure("closed"), nothingReceived: nothingReceived, now: 1)) == "close | outcome:failed | respond(upstream: closed)")
        }
        var empty = Self.machine(Self.policy(classifier: .nonRetryable5XX), budgets: Budgets(retries: 0))
        Self.connected(&empty, reused: true)
        #expect(Self.render(empty.upstreamFailed(Failure("closed"), nothingReceived: true, now: 1)) == "close | outcome:failed | respond(upstream: closed)")
    }

    // MARK: the response

    @Test func informationalHeadsAreForwardedUpToALimit() {
        var m = Self.machine(Self.policy(classifier: .nonRetryable5XX))
        Self.connected(&m)
        for _ in 0..<16 {
            #expect(Self.render(m.responseHead(status: 100, upstreamSaysRetryable: false, now: 0)) == "forwardInformational")
        }
        #expect(Self.render(m.responseHead(status: 103, upstreamSaysRetryable: false, now: 0))
            == "close | outcome:failed | respond(upstream: the upstream sent more than 16 informational (1xx) responses to one request)")
    }

    @Test func switchingProtocolsIsRefused() {
        var m = Self.machine(Self.policy(classifier: .nonRetryable5XX))
        Self.connected(&m)
        #expect(Self.render(m.responseHead(status: 101, upstreamSaysRetryable: false, now: 0))
            == "close | outcome:failed | respond(upstream: the upstream switched protocols (101), which meshd does not proxy yet)")
    }

    @Test func aFailureAfterTheHeadBreaksTheClientStream() {
        var m = Self.machine()
        Self.connected(&m)
        _ = m.responseHead(status: 200, upstreamSaysRetryable: false, now: 0)
        #expect(Self.render(m.upstreamFailed(Failure("reset"), nothingReceived: false, now: 1)) == "close | outcome:failed | abortDownstream")
    }

    @Test func theEndMayReclassify() {
        var m = Self.machine()
        Self.connected(&m)
        _ = m.responseHead(status: 200, upstreamSaysRetryable: false, now: 0)
        #expect(Self.render(m.responseEnd(reclassified: .failure(retryable: false), now: 1)) == "returnIfClean | outcome:failed | endResponse")
        #expect(m.summary.responseClass == .failure(retryable: false) && m.summary.status == 200)
    }

    // MARK: the client side

    @Test func theClientGoingAwayGivesEverythingBack() {
        var leasing = Self.machine()
        _ = leasing.start(now: 0, bindingPending: false)
        _ = leasing.picked(Self.a, probe: false, now: 0)
        #expect(Self.render(leasing.downstreamClosed(now: 1)) == "cancelLease | outcome:nil | abandon")
        var connected = Self.machine()
        Self.connected(&connected)
        #expect(Self.render(connected.downstreamClosed(now: 1)) == "close | outcome:nil | abandon")
        var streaming = Self.machine()
        Self.connected(&streaming)
        _ = streaming.responseHead(status: 200, upstreamSaysRetryable: false, now: 0)
        #expect(Self.render(streaming.downstreamClosed(now: 1)) == "close | outcome:ok | abandon")
    }

    @Test func aBrokenClientStreamIsAnsweredUnlessTheResponseBegan() {
        var m = Self.machine(Self.policy(method: "POST", declaresBody: true))
        Self.connected(&m, ended: false)
        #expect(Self.render(m.downstreamFailed(Failure("bad chunk"), now: 1)) == "close | outcome:nil | respond(client: bad chunk)")
        var n = Self.machine(Self.policy(method: "POST", declaresBody: true))
        Self.connected(&n, ended: false)
        _ = n.responseHead(status: 200, upstreamSaysRetryable: false, now: 0)
        #expect(Self.render(n.downstreamFailed(Failure("bad chunk"), now: 1)) == "close | outcome:ok | abandon")
    }

    @Test func aClientWaitingForContinueMayStillSendItsBody() {
        var m = Self.machine(Self.policy(method: "POST", declaresBody: true, expectsContinue: true))
        Self.connected(&m, ended: false)
        #expect(m.clientMayStillSendBody)
        _ = m.requestBody(Self.part("b1"))
        #expect(!m.clientMayStillSendBody)
    }
}
