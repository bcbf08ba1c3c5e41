// Checks a decoded request head before anything is forwarded: message framing that two parsers
// could read differently (request smuggling), limits on the request line and header section, and
// proxy loops. The HTTP/1.1 decoder has already rejected malformed syntax (bad tokens, control
// characters in values, obs-fold); what it lets through but a proxy must not is caught here.

import NIOHTTP1

/// Which headers of interest a request carries, found in the validator's one pass over them, so
/// that later steps look a header up only when it is there.
struct HeaderFacts: OptionSet, Sendable {
    let rawValue: UInt32

    static let expect = HeaderFacts(rawValue: 1 << 0)
    static let upgrade = HeaderFacts(rawValue: 1 << 1)
    static let dtab = HeaderFacts(rawValue: 1 << 2)          // l5d-dtab or l5d-ctx-dtab
    static let deadline = HeaderFacts(rawValue: 1 << 3)      // l5d-ctx-deadline
    static let l5d = HeaderFacts(rawValue: 1 << 4)           // any l5d-* header
    static let hopByHop = HeaderFacts(rawValue: 1 << 5)
    static let via = HeaderFacts(rawValue: 1 << 6)
    static let contentLength = HeaderFacts(rawValue: 1 << 7)

    /// Facts about `name`, compared without allocating.
    static func of(_ name: String) -> HeaderFacts {
        var facts: HeaderFacts = []
        if HeaderRules.isHopByHop(name) { facts.insert(.hopByHop) }
        let utf8 = name.utf8
        if utf8.count >= 4, let first = utf8.first, first | 0x20 == UInt8(ascii: "l"), name.lowercasedPrefixIsL5d {
            facts.insert(.l5d)
            switch utf8.count {
            case 8: if name.asciiCaseInsensitiveEquals("l5d-dtab") { facts.insert(.dtab) }
            case 12: if name.asciiCaseInsensitiveEquals("l5d-ctx-dtab") { facts.insert(.dtab) }
            case 16: if name.asciiCaseInsensitiveEquals("l5d-ctx-deadline") { facts.insert(.deadline) }
            default: break
            }
            return facts
        }
        switch utf8.count {
        case 3: if name.asciiCaseInsensitiveEquals("via") { facts.insert(.via) }
        case 6: if name.asciiCaseInsensitiveEquals("expect") { facts.insert(.expect) }
        case 7: if name.asciiCaseInsensitiveEquals("upgrade") { facts.insert(.upgrade) }
        case 14: if name.asciiCaseInsensitiveEquals("content-length") { facts.insert(.contentLength) }
        default: break
        }
        return facts
    }
}

extension String {
    /// Whether the name starts with `l5d-`, in any case.
    var lowercasedPrefixIsL5d: Bool {
        var iterator = utf8.makeIterator()
        guard let a = iterator.next(), let b = iterator.next(), let c = iterator.next(), let d = iterator.next() else { return false }
        return a | 0x20 == UInt8(ascii: "l") && b == UInt8(ascii: "5") && c | 0x20 == UInt8(ascii: "d") && d == UInt8(ascii: "-")
    }
}

package struct RequestLimits: Sendable {
    var maxInitialLineBytes: Int
    package var maxHeaderBytes: Int
    var maxCallDepth: Int
}

enum RequestValidator {
    /// The framing of the request body and the headers of interest, or why the request must be refused.
    static func validate(_ head: HTTPRequestHead, limits: RequestLimits) -> Result<(HeaderRules.RequestFraming, HeaderFacts), ProxyError> {
        var facts: HeaderFacts = []
        return validate(head, limits: limits, facts: &facts).flatMap { framing in
            if head.method == .TRACE && framing != .none {
                // RFC 9110 §9.3.8: a TRACE request has no content; one that says otherwise is
                // refused rather than forwarded with a body some upstream would not expect.
                return .failure(ProxyError(.badRequest, "a TRACE request must not have a body"))
            }
            return .success((framing, facts))
        }
    }

    private static func validate(_ head: HTTPRequestHead, limits: RequestLimits, facts: inout HeaderFacts) -> Result<HeaderRules.RequestFraming, ProxyError> {
        // "METHOD SP request-target SP HTTP/1.1"
        let lineLength = head.method.rawValue.utf8.count + head.uri.utf8.count + 10
        if lineLength > limits.maxInitialLineBytes {
            return .failure(ProxyError(.uriTooLong, "request line is \(lineLength) bytes; the limit is \(limits.maxInitialLineBytes) (maxInitialLineKB)"))
        }
        var headerBytes = 0
        var contentLengths: [Substring] = []
        var transferEncodings: [Substring] = []
        var hosts = 0
        for (name, value) in head.headers {
            headerBytes += name.utf8.count + value.utf8.count + 4
            facts.formUnion(HeaderFacts.of(name))
            if name.utf8.count == 4, name.asciiCaseInsensitiveEquals("host") {
                hosts += 1
            } else if name.utf8.count == 14, name.lowercased() == "content-length" {
                contentLengths.append(contentsOf: value.split(separator: ",", omittingEmptySubsequences: false))
            } else if name.utf8.count == 17, name.lowercased() == "transfer-encoding" {
                transferEncodings.append(contentsOf: value.split(separator: ",", omittingEmptySubsequences: false))
            }
        }
        if headerBytes > limits.maxHeaderBytes {
            return .failure(ProxyError(.headersTooLarge, "request headers are \(headerBytes) bytes; the limit is \(limits.maxHeaderBytes) (maxHeadersKB)"))
        }
        if hosts > 1 {
            // Two parsers could pick different ones (RFC 9112 §3.2: answer 400).
            return .failure(ProxyError(.badRequest, "request has \(hosts) Host headers; send exactly one"))
        }

        let hops = facts.contains(.via) ? HeaderRules.viaHops(head.headers) : 0
        if hops > limits.maxCallDepth {
            return .failure(ProxyError(.loopDetected, "request has passed \(hops) proxies (Via), more than maxCallDepth \(limits.maxCallDepth); check for a routing loop"))
        }
        if !transferEncodings.isEmpty {
            if !contentLengths.isEmpty {
                return .failure(ProxyError(.badRequest, "request has both Content-Length and Transfer-Encoding"))
            }
            let codings = transferEncodings.map { $0.trimmingSpaces.lowercased() }
            guard codings == ["chunked"] else {
                return .failure(ProxyError(.badRequest, "unsupported Transfer-Encoding '\(transferEncodings.joined(separator: ","))'; only 'chunked' is accepted"))
            }
            if head.version.major == 1 && head.version.minor == 0 {
                return .failure(ProxyError(.badRequest, "Transfer-Encoding is not allowed in an HTTP/1.0 request"))
            }
            return .success(.chunked)
        }
        guard let first = contentLengths.first else { return .success(.none) }
        let trimmed = first.trimmingSpaces
        guard !trimmed.isEmpty, trimmed.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let length = Int(trimmed) else {
            return .failure(ProxyError(.badRequest, "invalid Content-Length '\(first)'"))
        }
        for other in contentLengths.dropFirst() where other.trimmingSpaces != trimmed {
            return .failure(ProxyError(.badRequest, "request has conflicting Content-Length values"))
        }
        return .success(length == 0 ? .none : .contentLength(length))
    }
}

extension RequestValidator {
    /// Why the request's `Expect` cannot be met, or nil: only `100-continue` can be (RFC 9110
    /// §10.1.1). The framing is sound, so the answer (417) keeps the connection.
    static func unmetExpectation(_ head: HTTPRequestHead) -> ProxyError? {
        for value in head.headers[canonicalForm: "expect"] {
            for member in value.split(separator: ",") where member.trimmingSpaces.lowercased() != "100-continue" {
                return ProxyError(.expectationFailed, "unsupported expectation 'Expect: \(member.trimmingSpaces)'; only 100-continue is supported")
            }
        }
        return nil
    }
}

extension Substring {
    var trimmingSpaces: Substring {
        var slice = self
        while let first = slice.first, first == " " || first == "\t" { slice = slice.dropFirst() }
        while let last = slice.last, last == " " || last == "\t" { slice = slice.dropLast() }
        return slice
    }
}
