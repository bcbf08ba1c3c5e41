// Checks a decoded request head before anything is forwarded: message framing that two parsers
// could read differently (request smuggling), limits on the request line and header section, and
// proxy loops. The HTTP/1.1 decoder has already rejected malformed syntax (bad tokens, control
// characters in values, obs-fold); what it lets through but a proxy must not is caught here.

import NIOHTTP1

struct RequestLimits: Sendable {
    var maxInitialLineBytes: Int
    var maxHeaderBytes: Int
    var maxCallDepth: Int
}

enum RequestValidator {
    /// The framing of the request body, or why the request must be refused.
    static func validate(_ head: HTTPRequestHead, limits: RequestLimits) -> Result<HeaderRules.RequestFraming, ProxyError> {
        // "METHOD SP request-target SP HTTP/1.1"
        let lineLength = head.method.rawValue.utf8.count + head.uri.utf8.count + 10
        if lineLength > limits.maxInitialLineBytes {
            return .failure(ProxyError(.uriTooLong, "request line is \(lineLength) bytes; the limit is \(limits.maxInitialLineBytes) (maxInitialLineKB)"))
        }
        var headerBytes = 0
        var contentLengths: [Substring] = []
        var transferEncodings: [Substring] = []
        for (name, value) in head.headers {
            headerBytes += name.utf8.count + value.utf8.count + 4
            if name.utf8.count == 14, name.lowercased() == "content-length" {
                contentLengths.append(contentsOf: value.split(separator: ",", omittingEmptySubsequences: false))
            } else if name.utf8.count == 17, name.lowercased() == "transfer-encoding" {
                transferEncodings.append(contentsOf: value.split(separator: ",", omittingEmptySubsequences: false))
            }
        }
        if headerBytes > limits.maxHeaderBytes {
            return .failure(ProxyError(.headersTooLarge, "request headers are \(headerBytes) bytes; the limit is \(limits.maxHeaderBytes) (maxHeadersKB)"))
        }
        let hops = HeaderRules.viaHops(head.headers)
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

extension Substring {
    var trimmingSpaces: Substring {
        var slice = self
        while let first = slice.first, first == " " || first == "\t" { slice = slice.dropFirst() }
        while let last = slice.last, last == " " || last == "\t" { slice = slice.dropLast() }
        return slice
    }
}
