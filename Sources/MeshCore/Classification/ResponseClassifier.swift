// Response classification (Linkerd's `service.responseClassifier`): is this response a success,
// a failure, and if a failure, may the request be sent again? The class drives retries, failure
// accrual and success metrics, and is reported to the caller in `l5d-success-class` and
// `l5d-retryable`.

/// The outcome of one attempt as a classifier sees it.
public enum ResponseClass: Sendable, Hashable {
    case success
    case failure(retryable: Bool)

    public var isSuccess: Bool { self == .success }

    public var isRetryable: Bool {
        if case .failure(true) = self { return true }
        return false
    }
}

public enum ResponseClassifier: String, Sendable, Hashable, CaseIterable {
    /// 5xx responses and failed exchanges are failures, never retried. Linkerd's default.
    case nonRetryable5XX = "io.l5d.http.nonRetryable5XX"
    /// As above, but retryable for read methods (GET, HEAD, OPTIONS, TRACE).
    case retryableRead5XX = "io.l5d.http.retryableRead5XX"
    /// As above, but retryable for idempotent methods (also PUT and DELETE).
    case retryableIdempotent5XX = "io.l5d.http.retryableIdempotent5XX"
    /// 5xx responses and failed exchanges are retryable failures whatever the method.
    case retryableAll5XX = "io.l5d.http.retryableAll5XX"
    /// Everything is a success.
    case allSuccessful = "io.l5d.http.allSuccessful"

    /// Classifies an attempt. `status` is nil when there was no response (connection failure,
    /// reset, timeout). `upstreamSaysRetryable` is the response's own `l5d-retryable: true` (a
    /// downstream meshd or linkerd saying the request never reached its upstream). It is
    /// honoured for idempotent methods only: any upstream can send the header, and believing
    /// it for a POST would let an application that had acted on the request have it sent twice.
    public func classify(method: String, status: Int?, upstreamSaysRetryable: Bool = false) -> ResponseClass {
        if self == .allSuccessful { return .success }
        if let status, status < 500 { return .success }
        let retryable: Bool
        switch self {
        case .nonRetryable5XX: retryable = false
        case .retryableRead5XX: retryable = Self.readMethods.contains(method)
        case .retryableIdempotent5XX: retryable = Self.idempotentMethods.contains(method)
        case .retryableAll5XX: retryable = true
        case .allSuccessful: return .success
        }
        return .failure(retryable: retryable || (upstreamSaysRetryable && Self.idempotentMethods.contains(method)))
    }

    public static let readMethods: Set<String> = ["GET", "HEAD", "OPTIONS", "TRACE"]
    public static let idempotentMethods: Set<String> = ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"]
}
