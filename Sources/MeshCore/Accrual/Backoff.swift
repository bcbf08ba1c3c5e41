// Backoff sequences: how long to wait before the next try (a probe of an ejected endpoint, a
// retry). Pure: randomness comes in as an argument, and `reset()` starts the sequence over.

/// A sequence of waits in nanoseconds.
public struct Backoff: Sendable, Hashable {
    public enum Kind: Sendable, Hashable {
        /// The same wait every time.
        case constant(nanoseconds: UInt64)
        /// Exponential from `min` to `max`, each wait half fixed and half random
        /// ("equal jitter"): Linkerd's default for failure accrual, 5 s to 300 s.
        case equalJittered(min: UInt64, max: UInt64)
        /// Decorrelated jitter: each wait random between `min` and three times the previous one,
        /// capped at `max` (Linkerd's `jittered` kind).
        case decorrelatedJittered(min: UInt64, max: UInt64)
    }

    public let kind: Kind
    private var attempt: UInt64 = 0
    private var previous: UInt64 = 0

    public init(_ kind: Kind) {
        self.kind = kind
    }

    public static let linkerdFailureAccrualDefault = Backoff(.equalJittered(min: 5_000_000_000, max: 300_000_000_000))

    /// The next wait.
    public mutating func next<R: RandomNumberGenerator>(using random: inout R) -> UInt64 {
        defer { attempt += 1 }
        switch kind {
        case .constant(let wait):
            return wait
        case .equalJittered(let minimum, let maximum):
            // The first wait is the minimum itself (as Finagle's); later ones grow, half jittered.
            if attempt == 0 { return min(minimum, maximum) }
            let shift = min(attempt, 40)
            let ceiling = min(maximum, minimum.multipliedReportingOverflow(by: 1 << shift).overflow ? maximum : minimum << shift)
            let half = max(ceiling / 2, 1)
            return min(maximum, half + UInt64.random(in: 0...half, using: &random))
        case .decorrelatedJittered(let minimum, let maximum):
            let upper = max(minimum, min(maximum, previous == 0 ? minimum : previous.multipliedReportingOverflow(by: 3).overflow ? maximum : previous * 3))
            let wait = UInt64.random(in: minimum...upper, using: &random)
            previous = wait
            return wait
        }
    }

    /// Starts over from the first wait.
    public mutating func reset() {
        attempt = 0
        previous = 0
    }
}
