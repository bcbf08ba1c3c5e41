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

    /// Removes hop-by-hop headers, and every header the `Connection` header names.
    static func removeHopByHop(_ headers: inout HTTPHeaders) {
        var named: [String] = []
        for value in headers[canonicalForm: "connection"] {
            let token = value.lowercased()
            if token != "close" && token != "keep-alive" { named.append(String(token)) }
        }
        for name in named { headers.remove(name: name) }
        for name in hopByHop where headers.contains(name: name) { headers.remove(name: name) }
    }

    /// Appends meshd to `Via`.
    static func appendVia(_ headers: inout HTTPHeaders) {
        if let existing = headers.first(name: "via") {
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
