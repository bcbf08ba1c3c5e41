// What crosses the proxy and what does not: hop-by-hop headers (RFC 9110 §7.6.1) and those a
// `Connection` header names stay on their hop; `Via` records meshd; the `l5d-dst-*` headers tell
// the upstream how the request was routed.

import NIOHTTP1

enum HeaderRules {
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

    /// Removes hop-by-hop headers, and every header the `Connection` header names. One pass
    /// finds them (most messages have none, or just `Connection: keep-alive`); each name found
    /// is then removed in place.
    static func removeHopByHop(_ headers: inout HTTPHeaders) {
        var doomed: [String] = []
        for (name, value) in headers where isHopByHop(name) {
            let lowered = name.lowercased()
            if !doomed.contains(lowered) { doomed.append(lowered) }
            guard lowered == "connection" else { continue }
            for token in value.split(separator: ",") {
                let option = token.trimmingSpaces.lowercased()
                if option != "close" && option != "keep-alive" && !option.isEmpty && !doomed.contains(option) { doomed.append(option) }
            }
        }
        for name in doomed { headers.remove(name: name) }
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
