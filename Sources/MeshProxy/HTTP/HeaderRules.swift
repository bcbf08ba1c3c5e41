// What crosses the proxy and what does not: hop-by-hop headers (RFC 9110 §7.6.1) and those a
// `Connection` header names stay on their hop; `Via` records meshd; the `l5d-dst-*` headers tell
// the upstream how the request was routed.

import NIOHTTP1

enum HeaderRules {
    /// Headers that describe one connection, never forwarded as they are.
    static let hopByHop: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade", "trailer",
        "proxy-authenticate", "proxy-authorization",
    ]

    static let viaToken = "1.1 meshd"

    /// Whether `name` is a hop-by-hop header, compared without allocating.
    static func isHopByHop(_ name: String) -> Bool {
        switch name.utf8.count {
        case 2: return name.asciiCaseInsensitiveEquals("te")
        case 7: return name.asciiCaseInsensitiveEquals("upgrade") || name.asciiCaseInsensitiveEquals("trailer")
        case 10: return name.asciiCaseInsensitiveEquals("connection") || name.asciiCaseInsensitiveEquals("keep-alive")
        case 16: return name.asciiCaseInsensitiveEquals("proxy-connection")
        case 17: return name.asciiCaseInsensitiveEquals("transfer-encoding")
        case 18: return name.asciiCaseInsensitiveEquals("proxy-authenticate")
        case 19: return name.asciiCaseInsensitiveEquals("proxy-authorization")
        default: return false
        }
    }

    /// Removes hop-by-hop headers, and every header the `Connection` header names.
    static func removeHopByHop(_ headers: inout HTTPHeaders) {
        // Most messages have none: one pass to find out before changing anything.
        guard headers.contains(where: { isHopByHop($0.name) }) else { return }
        var named: [String] = []
        for value in headers[canonicalForm: "connection"] {
            let token = value.lowercased()
            if token != "close" && token != "keep-alive" { named.append(String(token)) }
        }
        for name in named { headers.remove(name: name) }
        for name in hopByHop where headers.contains(name: name) { headers.remove(name: name) }
    }

    /// Appends meshd to `Via`. `present`: whether the message has a Via header already.
    static func appendVia(_ headers: inout HTTPHeaders, present: Bool = true) {
        if present, let existing = headers.first(name: "via") {
            headers.replaceOrAdd(name: "via", value: existing + ", " + viaToken)
        } else {
            headers.add(name: "via", value: viaToken)
        }
    }

    /// How many proxies the request has passed, from its `Via` headers.
    static func viaHops(_ headers: HTTPHeaders) -> Int {
        var count = 0
        for value in headers["via"] {
            count += value.split(separator: ",").count
        }
        return count
    }

    /// Whether the request carries a body, and how it is framed.
    enum RequestFraming: Equatable {
        case none
        case contentLength(Int)
        case chunked
    }
}

extension String {
    /// Equality ignoring ASCII case; `lowercase` must already be lower case.
    func asciiCaseInsensitiveEquals(_ lowercase: StaticString) -> Bool {
        var other = lowercase.utf8Start
        var remaining = lowercase.utf8CodeUnitCount
        guard utf8.count == remaining else { return false }
        for byte in utf8 {
            let lowered = byte >= 0x41 && byte <= 0x5A ? byte | 0x20 : byte
            if lowered != other.pointee { return false }
            other += 1
            remaining -= 1
        }
        return true
    }
}
