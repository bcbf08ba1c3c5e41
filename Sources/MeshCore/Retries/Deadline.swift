// Request deadlines as Linkerd propagates them in `l5d-ctx-deadline`: "<timestamp> <deadline>",
// both nanoseconds since the Unix epoch (the time the header was written, and the time by which
// the request must be answered). Several values combine to the strictest.
//
// Both numbers come from the caller, so they may be anything an Int64 holds: every sum and
// difference here saturates instead of trapping (one header near Int64.min once killed the
// process).

public struct Deadline: Sendable, Hashable {
    /// When the deadline was set, in nanoseconds since the epoch.
    public var timestamp: Int64
    /// When the request must be done, in nanoseconds since the epoch.
    public var deadline: Int64

    public init(timestamp: Int64, deadline: Int64) {
        self.timestamp = timestamp
        self.deadline = deadline
    }

    /// Reads `l5d-ctx-deadline` values; nil when there are none. Malformed values are errors.
    public static func read(_ values: [String]) -> Result<Deadline?, DeadlineSyntaxError> {
        var strictest: Deadline?
        for value in values {
            let fields = value.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard fields.count == 2, let timestamp = Int64(fields[0]), let deadline = Int64(fields[1]) else {
                return .failure(DeadlineSyntaxError(value: value))
            }
            let parsed = Deadline(timestamp: timestamp, deadline: deadline)
            if strictest == nil || parsed.deadline < strictest!.deadline { strictest = parsed }
        }
        return .success(strictest)
    }

    /// Nanoseconds left at `now` (epoch ns); 0 once the deadline has passed.
    public func remaining(now: Int64) -> UInt64 {
        deadline <= now ? 0 : UInt64(deadline.saturatingSubtracting(now))
    }

    /// How long ago the deadline passed, at `now`; nil if it has not.
    public func overdue(now: Int64) -> UInt64? {
        deadline <= now ? UInt64(now.saturatingSubtracting(deadline)) : nil
    }

    /// The header value to send on, written at `now`.
    public func headerValue(now: Int64) -> String { "\(now) \(deadline)" }

    /// The stricter of two deadlines.
    public func tightened(to other: Int64) -> Deadline {
        Deadline(timestamp: timestamp, deadline: min(deadline, other))
    }

    /// The deadline to pass to the next hop at `now` (epoch ns): the caller's, tightened to
    /// `within` nanoseconds from now when meshd has a limit of its own.
    public static func passOn(_ caller: Deadline?, within: UInt64?, now: Int64) -> Deadline? {
        guard let within else { return caller }
        let ours = now.saturatingAdding(within)
        return caller?.tightened(to: ours) ?? Deadline(timestamp: now, deadline: ours)
    }
}

public struct DeadlineSyntaxError: Error, Hashable, Sendable, CustomStringConvertible {
    public var value: String
    public var description: String { "invalid l5d-ctx-deadline '\(value)': expected '<timestamp ns> <deadline ns>'" }
}

extension Int64 {
    /// `self - other`, clamped to Int64's range.
    public func saturatingSubtracting(_ other: Int64) -> Int64 {
        let (result, overflow) = subtractingReportingOverflow(other)
        guard overflow else { return result }
        return other > 0 ? .min : .max
    }

    /// `self + other`, clamped to Int64's range (`other` as an unsigned amount).
    public func saturatingAdding(_ other: UInt64) -> Int64 {
        if self >= 0 {
            let (sum, overflow) = UInt64(self).addingReportingOverflow(other)
            return overflow || sum > UInt64(Int64.max) ? .max : Int64(sum)
        }
        let magnitude = self.magnitude
        if other >= magnitude {
            let sum = other - magnitude
            return sum > UInt64(Int64.max) ? .max : Int64(sum)
        }
        // Negative, of magnitude 1 through 2^63.
        return Int64(bitPattern: 0 &- (magnitude - other))
    }
}

extension UInt64 {
    /// `self + other`, clamped to UInt64's range.
    public func saturatingAdding(_ other: UInt64) -> UInt64 {
        let (result, overflow) = addingReportingOverflow(other)
        return overflow ? .max : result
    }
}
