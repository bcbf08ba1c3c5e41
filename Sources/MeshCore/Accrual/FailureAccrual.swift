// Failure accrual (circuit breaking per endpoint), as Finagle splits it: a policy that only
// decides "this endpoint looks dead, for how long", and a per-endpoint state machine that turns
// request outcomes into ejections, one probe when the backoff has passed, and revival when the
// probe succeeds (a failed probe ejects again, for the next, longer backoff). Time comes in as
// an argument (nanoseconds on any monotonic clock); nothing here reads a clock.

/// What makes an endpoint count as dead.
public enum FailureAccrualPolicy: Sendable, Hashable {
    /// Never eject.
    case none
    /// `failures` failures in a row (Linkerd's default: 5).
    case consecutiveFailures(Int)
    /// The success rate, as an exponentially weighted average over about `requests` requests,
    /// falls below `rate` once at least `requests` outcomes have been seen.
    case successRate(rate: Double, requests: Int)
    /// The success rate over the last `window` nanoseconds falls below `rate` (with at least
    /// `minimumRequests` outcomes in the window).
    case successRateWindowed(rate: Double, window: UInt64, minimumRequests: Int)
}

/// One endpoint's accrual state.
public struct EndpointAccrual: Sendable {
    public enum Status: Sendable, Equatable {
        case alive
        /// Ejected; a probe may go once `until` has passed.
        case ejected(until: UInt64)
        /// One request is probing whether it came back.
        case probing
    }

    /// What an outcome changed, for metrics and logs.
    public enum Event: Sendable, Equatable {
        case ejected(forNanoseconds: UInt64)
        case revived
    }

    public let policy: FailureAccrualPolicy
    public private(set) var status: Status = .alive
    private var backoff: Backoff
    private var consecutiveFailures = 0
    private var ewmaSuccess = 1.0
    private var samples = 0
    /// For the windowed policy: the outcomes within the window.
    private var window: OutcomeWindow?

    public init(policy: FailureAccrualPolicy, backoff: Backoff) {
        self.policy = policy
        self.backoff = backoff
        if case .successRateWindowed(_, let length, _) = policy { window = OutcomeWindow(length: length) }
    }

    /// Whether a request may be sent now. An ejected endpoint whose backoff has passed is
    /// available for exactly one probe; call `probeStarted` when that pick is taken.
    public func isAvailable(now: UInt64) -> Bool {
        switch status {
        case .alive: return true
        case .ejected(let until): return now >= until
        case .probing: return false
        }
    }

    /// A pick landed here at `now`: if it is the probe, no other request may follow until it ends.
    /// `early`: every endpoint is ejected, so the balancer sends here anyway; the request probes
    /// before the backoff has passed.
    public mutating func picked(now: UInt64, early: Bool = false) {
        if case .ejected(let until) = status, now >= until || early { status = .probing }
    }

    /// The probe ended without saying anything (its client went away, a local limit): the next
    /// request may probe again.
    public mutating func probeAbandoned(now: UInt64) {
        if case .probing = status { status = .ejected(until: now) }
    }

    /// A request ended. `success` is false for connection failures and responses classified as
    /// failures. `wasProbe` tells the probe apart from requests that were in flight before the
    /// ejection: only the probe decides a probing endpoint's fate.
    public mutating func outcome<R: RandomNumberGenerator>(success: Bool, wasProbe: Bool = true, now: UInt64, using random: inout R) -> Event? {
        switch status {
        case .probing:
            guard wasProbe else { return nil }
            if success {
                revive()
                return .revived
            }
            return eject(now: now, using: &random)
        case .ejected:
            // Requests already in flight when the endpoint was ejected: their outcomes do not count.
            return nil
        case .alive:
            record(success, now: now)
            return shouldEject(now: now) ? eject(now: now, using: &random) : nil
        }
    }

    private mutating func record(_ success: Bool, now: UInt64) {
        consecutiveFailures = success ? 0 : consecutiveFailures + 1
        samples += 1
        switch policy {
        case .successRate(_, let requests):
            let alpha = 2.0 / Double(max(requests, 1) + 1)
            ewmaSuccess += alpha * ((success ? 1.0 : 0.0) - ewmaSuccess)
        case .successRateWindowed:
            window?.record(success: success, now: now)
        case .none, .consecutiveFailures:
            break
        }
    }

    private func shouldEject(now: UInt64) -> Bool {
        switch policy {
        case .none:
            return false
        case .consecutiveFailures(let limit):
            return consecutiveFailures >= limit
        case .successRate(let rate, let requests):
            return samples >= requests && ewmaSuccess < rate
        case .successRateWindowed(let rate, _, let minimum):
            guard let counts = window?.counts(now: now), counts.total >= minimum else { return false }
            return Double(counts.successes) / Double(counts.total) < rate
        }
    }

    private mutating func eject<R: RandomNumberGenerator>(now: UInt64, using random: inout R) -> Event {
        let wait = backoff.next(using: &random)
        status = .ejected(until: now &+ wait)
        return .ejected(forNanoseconds: wait)
    }

    private mutating func revive() {
        status = .alive
        backoff.reset()
        consecutiveFailures = 0
        ewmaSuccess = 1.0
        samples = 0
        window?.reset()
    }
}
