// What crosses the proxy and what does not: hop-by-hop headers (RFC 9110 §7.6.1) and those a
// `Connection` header names stay on their hop; `Via` records meshd; the `l5d-dst-*` headers tell
// the upstream how the request was routed.

import NIOHTTP1

package enum HeaderRules {
    package static let viaToken = "1.1 meshd"

    /// The lower-case name of a hop-by-hop header, or nil; compared without allocating.
    static func hopByHopName(_ name: String) -> String? {
        switch name.utf8.count {
        case 2: return name.asciiCaseInsensitiveEquals("te") ? "te" : nil
        case 7:
            if name.asciiCaseInsensitiveEquals("upgrade") { return "upgrade" }
            return name.asciiCaseInsensitiveEquals("trailer") ? "trailer" : nil
        case 10:
            if name.asciiCaseInsensitiveEquals("connection") { return "connection" }
            return name.asciiCaseInsensitiveEquals("keep-alive") ? "keep-alive" : nil
        case 16: return name.asciiCaseInsensitiveEquals("proxy-connection") ? "proxy-connection" : nil
        case 17: return name.asciiCaseInsensitiveEquals("transfer-encoding") ? "transfer-encoding" : nil
        case 18: return name.asciiCaseInsensitiveEquals("proxy-authenticate") ? "proxy-authenticate" : nil
        case 19: return name.asciiCaseInsensitiveEquals("proxy-authorization") ? "proxy-authorization" : nil
        default: return nil
        }
    }

    /// Whether `name` is a hop-by-hop header.
    static func isHopByHop(_ name: String) -> Bool {
        hopByHopName(name) != nil
    }

    /// Other headers of interest that `removeHopByHop` saw on its way.
    struct Seen {
        var via = false
        /// `l5d-success-class` or `l5d-retryable`, which meshd sets itself on responses.
        var classification = false
    }

    /// Removes hop-by-hop headers, and every header the `Connection` header names. One pass
    /// finds them (most messages have none, or just `Connection: keep-alive`, which names no
    /// other header); each name found is then removed in place.
    @discardableResult
    static func removeHopByHop(_ headers: inout HTTPHeaders) -> Seen {
        var doomed: [String] = []
        var seen = Seen()
        for (name, value) in headers {
            guard let canonical = hopByHopName(name) else {
                switch name.utf8.count {
                case 3: if name.asciiCaseInsensitiveEquals("via") { seen.via = true }
                case 13: if name.asciiCaseInsensitiveEquals("l5d-retryable") { seen.classification = true }
                case 17: if name.asciiCaseInsensitiveEquals("l5d-success-class") { seen.classification = true }
                default: break
                }
                continue
            }
            if !doomed.contains(canonical) { doomed.append(canonical) }
            guard canonical == "connection" else { continue }
            if value.asciiCaseInsensitiveEquals("keep-alive") || value.asciiCaseInsensitiveEquals("close") { continue }
            for token in value.split(separator: ",") {
                let option = token.trimmingSpaces.lowercased()
                if option == "close" || option == "keep-alive" || option.isEmpty || doomed.contains(option) { continue }
                // Framing and the Host are the message's, not the hop's: a `Connection` header
                // naming them must not strip them (`Connection: content-length` once left a
                // body that the next hop did not expect).
                if option == "content-length" || option == "host" { continue }
                doomed.append(option)
            }
        }
        for name in doomed { headers.remove(name: name) }
        return seen
    }

    /// Appends meshd to an existing `Via` header; returns false when there is none, for the
    /// caller to add one (with its other additions, in one append).
    static func extendVia(_ headers: inout HTTPHeaders) -> Bool {
        // Several Via headers are one list (RFC 9110 §5.3): they become one, in order, plus meshd.
        let existing = headers["via"]
        guard !existing.isEmpty else { return false }
        headers.replaceOrAdd(name: "via", value: (existing + [viaToken]).joined(separator: ", "))
        return true
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
