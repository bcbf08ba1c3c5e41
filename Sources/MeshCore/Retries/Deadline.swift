// Request deadlines as Linkerd propagates them in `l5d-ctx-deadline`: "<timestamp> <deadline>",
// both nanoseconds since the Unix epoch (the time the header was written, and the time by which
// the request must be answered). Several values combine to the strictest.

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

    /// The header value to send on, written at `now`.
    public func headerValue(now: Int64) -> String { "\(now) \(deadline)" }

    /// The stricter of two deadlines.
    public func tightened(to other: Int64) -> Deadline {
        Deadline(timestamp: timestamp, deadline: min(deadline, other))
    }
}

public struct DeadlineSyntaxError: Error, Hashable, Sendable, CustomStringConvertible {
    public var value: String
    public var description: String { "invalid l5d-ctx-deadline '\(value)': expected '<timestamp ns> <deadline ns>'" }
}
