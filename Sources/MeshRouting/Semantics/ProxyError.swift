// Every response meshd makes itself: a status, an `l5d-err` header with a one-line reason, the
// same reason as the body, and a metric label. Users see why; dashboards see how often.

import NIOHTTP1

/// A reason meshd answers a request itself instead of the upstream.
public struct ProxyError: Error, Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable, CaseIterable {
        /// The request is malformed (framing, header syntax).
        case badRequest = "bad_request"
        /// No identifier could name the request.
        case unidentified = "unidentified"
        /// The request line is longer than `maxInitialLineKB`.
        case uriTooLong = "uri_too_long"
        /// The header section is larger than `maxHeadersKB`.
        case headersTooLarge = "headers_too_large"
        /// The name delegated to nothing (neg), failed (`!`), or delegation broke.
        case unroutable = "unroutable"
        /// The name bound, but it has no endpoints.
        case noEndpoints = "no_endpoints"
        /// The endpoint's connection pool and its queue are full.
        case poolExhausted = "pool_exhausted"
        /// The listener's `maxConcurrentRequests` is reached.
        case tooManyRequests = "max_concurrent_requests"
        /// Could not connect to the endpoint.
        case connectFailed = "connect_failed"
        /// The upstream broke the exchange (reset, closed early, sent invalid HTTP).
        case upstreamFailed = "upstream_failed"
        /// The request passed through too many proxies (a routing loop).
        case loopDetected = "loop_detected"
        /// Discovery has not answered within `bindingTimeoutMs`.
        case bindingTimeout = "binding_timeout"
        /// meshd is shutting down, or the request was cancelled.
        case shuttingDown = "shutting_down"
        /// A method meshd does not proxy (CONNECT).
        case unsupportedMethod = "unsupported_method"
        /// No response within `totalTimeoutMs`, `requestAttemptTimeoutMs` or the server's `timeoutMs`.
        case timeout = "timeout"
        /// The request's `l5d-ctx-deadline` passed.
        case deadlineExceeded = "deadline_exceeded"
        /// The request's own dtab (`l5d-dtab`, `l5d-ctx-dtab`) needed more delegation work than
        /// meshd allows one request (lookups or rewrites).
        case delegationLimit = "delegation_limit"
        /// An `Expect` other than `100-continue`.
        case expectationFailed = "expectation_failed"
        /// The client did not send its request head within `requestHeadTimeoutMs`.
        case requestHeadTimeout = "request_head_timeout"
        /// The caller's certificate identity may not call the name (`tls.allow`).
        case forbidden = "forbidden"
    }

    public var kind: Kind
    public var message: String
    /// Whether the request certainly never reached an upstream (safe for the caller to retry).
    public var retryable: Bool
    /// For `connectFailed`: the connection attempt timed out.
    public var connectTimedOut: Bool

    public init(_ kind: Kind, _ message: String, retryable: Bool = false, connectTimedOut: Bool = false) {
        self.kind = kind
        self.message = message
        self.retryable = retryable
        self.connectTimedOut = connectTimedOut
    }

    public var status: HTTPResponseStatus {
        switch kind {
        case .badRequest, .unidentified, .delegationLimit: return .badRequest
        case .expectationFailed: return .expectationFailed
        case .forbidden: return .forbidden
        case .requestHeadTimeout: return .requestTimeout
        case .uriTooLong: return .uriTooLong
        case .headersTooLarge: return .requestHeaderFieldsTooLarge
        case .unroutable, .noEndpoints, .poolExhausted, .tooManyRequests, .bindingTimeout, .shuttingDown: return .serviceUnavailable
        case .loopDetected: return .badRequest
        case .unsupportedMethod: return .methodNotAllowed
        case .timeout, .deadlineExceeded: return .gatewayTimeout
        case .connectFailed, .upstreamFailed: return .badGateway
        }
    }

    public var description: String { message }

    /// The `l5d-err` header value: the message on one line, printable ASCII only.
    package var headerValue: String {
        var out = ""
        out.reserveCapacity(message.utf8.count)
        for scalar in message.unicodeScalars {
            if scalar.value >= 0x20 && scalar.value < 0x7F { out.unicodeScalars.append(scalar) } else { out.append(" ") }
        }
        return out
    }
}
