// The heads meshd sends on: the request to the upstream (origin-form target, hop-by-hop headers
// gone, framing made explicit, routing headers added) and the response to the client
// (hop-by-hop headers gone, `Via`, and the connection's fate).

import MeshCore
import MeshDiscovery
import NIOHTTP1

package enum MessageRewriting {
    /// Splits an absolute-form target (`http://host:port/path?q`, as `http_proxy` clients send)
    /// into its authority and origin-form target. Nil for origin-form targets.
    static func absoluteForm(_ uri: String) -> (authority: String, target: String)? {
        // Origin-form (the usual case) and `*` are settled by the first byte, without allocating.
        guard let first = uri.utf8.first, first == UInt8(ascii: "h") || first == UInt8(ascii: "H") else { return nil }
        let lowered = uri.prefix(8).lowercased()
        let schemeLength: Int
        if lowered.hasPrefix("http://") {
            schemeLength = 7
        } else if lowered.hasPrefix("https://") {
            schemeLength = 8
        } else {
            return nil
        }
        let rest = uri.dropFirst(schemeLength)
        let end = rest.firstIndex { $0 == "/" || $0 == "?" } ?? rest.endIndex
        var authority = rest[..<end]
        if let at = authority.lastIndex(of: "@") { authority = authority[authority.index(after: at)...] }
        var target = String(rest[end...])
        if target.isEmpty || target.hasPrefix("?") { target = "/" + target }
        return (String(authority), target)
    }

    /// The request to send upstream.
    static func upstreamRequest(
        from head: HTTPRequestHead,
        target: String,
        framing: HeaderRules.RequestFraming,
        facts: HeaderFacts,
        route: FastRoute,
        localDtab: Dtab,
        requestID: String
    ) -> HTTPRequestHead {
        var headers = head.headers
        if facts.contains(.hopByHop) { HeaderRules.removeHopByHop(&headers) }
        // The per-request dtab travels on as context, whichever header it came in.
        if facts.contains(.dtab) {
            headers.remove(name: "l5d-dtab")
            headers.remove(name: "l5d-ctx-dtab")
        }
        if !localDtab.isEmpty { headers.add(name: "l5d-ctx-dtab", value: localDtab.description) }
        // The one place that decides the framing the upstream sees: the validator's reading of the
        // request, written out afresh (the client's framing headers never pass as they came).
        // The request encoder then writes exactly this.
        if facts.contains(.contentLength) { headers.remove(name: "content-length") }
        switch framing {
        case .chunked:
            headers.add(name: "transfer-encoding", value: "chunked")
        case .contentLength(let length):
            headers.add(name: "content-length", value: String(length))
        case .none:
            if head.method == .POST || head.method == .PUT || head.method == .PATCH {
                headers.add(name: "content-length", value: "0")
            }
        }
        if facts.contains(.l5d) {
            // Routing headers from an earlier hop are replaced, not repeated.
            for name in ["l5d-dst-service", "l5d-dst-client", "l5d-dst-residual", "l5d-reqid"] { headers.remove(name: name) }
        }
        // What meshd adds goes on in one append (HTTPHeaders.add checks every name it is given).
        var added: [(String, String)] = []
        added.reserveCapacity(5)
        if !facts.contains(.via) || !HeaderRules.extendVia(&headers) { added.append(("via", HeaderRules.viaToken)) }
        added.append(("l5d-dst-service", route.serviceText))
        added.append(("l5d-dst-client", route.clientText))
        if let residual = route.residualText { added.append(("l5d-dst-residual", residual)) }
        added.append(("l5d-reqid", requestID))
        headers.add(contentsOf: HTTPHeaders(added))
        return HTTPRequestHead(version: .http1_1, method: head.method, uri: target, headers: headers)
    }

    /// The response to send to the client. `responseClass`: what the service's classifier said,
    /// reported in `l5d-success-class` and `l5d-retryable` (except on `clearContext` listeners).
    package static func downstreamResponse(
        from head: HTTPResponseHead, clientVersion: HTTPVersion, keepAlive: Bool, clearContext: Bool, responseClass: ResponseClass
    ) -> HTTPResponseHead {
        var headers = head.headers
        let seen = HeaderRules.removeHopByHop(&headers)
        if clearContext {
            removeL5dHeaders(&headers)
        } else if seen.classification {
            headers.remove(name: "l5d-success-class")
            headers.remove(name: "l5d-retryable")
        }
        var added: [(String, String)] = []
        added.reserveCapacity(4)
        if !seen.via || !HeaderRules.extendVia(&headers) { added.append(("via", HeaderRules.viaToken)) }
        if !keepAlive {
            added.append(("connection", "close"))
        } else if clientVersion.minor == 0 {
            added.append(("connection", "keep-alive"))
        }
        if !clearContext {
            added.append(("l5d-success-class", responseClass.isSuccess ? "1.0" : "0.0"))
            if responseClass.isRetryable { added.append(("l5d-retryable", "true")) }
        }
        headers.add(contentsOf: HTTPHeaders(added))
        return HTTPResponseHead(version: clientVersion.minor == 0 ? .http1_0 : .http1_1, status: head.status, headers: headers)
    }

    /// A 1xx response passed on to the client.
    package static func informationalResponse(from head: HTTPResponseHead) -> HTTPResponseHead {
        var headers = head.headers
        HeaderRules.removeHopByHop(&headers)
        return HTTPResponseHead(version: .http1_1, status: head.status, headers: headers)
    }

    /// Removes every `l5d-*` header (for listeners facing untrusted clients).
    static func removeL5dHeaders(_ headers: inout HTTPHeaders) {
        let names = Set(headers.map(\.name).filter { $0.utf8.count >= 4 && $0.lowercased().hasPrefix("l5d-") })
        for name in names { headers.remove(name: name) }
    }

    /// 16 hex digits.
    static func requestID(_ random: inout SplitMix64) -> String {
        var value = random.next()
        return String(unsafeUninitializedCapacity: 16) { buffer in
            for index in stride(from: 15, through: 0, by: -1) {
                let nibble = UInt8(value & 0xF)
                buffer[index] = nibble < 10 ? nibble + 48 : nibble + 87
                value >>= 4
            }
            return 16
        }
    }
}

extension MessageRewriting {
    /// The request's own dtab: every `l5d-ctx-dtab` value (context from earlier hops), then every
    /// `l5d-dtab` value (the caller's override, which therefore wins).
    static func localDtab(_ headers: HTTPHeaders) -> Result<Dtab, ProxyError> {
        var dtab = Dtab.empty
        for name in ["l5d-ctx-dtab", "l5d-dtab"] {
            for value in headers[canonicalForm: name] {
                do {
                    dtab = dtab + (try Dtab.read(String(value)))
                } catch {
                    return .failure(ProxyError(.badRequest, "invalid \(name) header: \(error.message) at character \(error.offset + 1)"))
                }
            }
        }
        return .success(dtab)
    }
}
