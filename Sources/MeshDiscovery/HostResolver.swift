// Turns the host of a discovery entry into a numeric address. IP literals need no lookup; names go
// through the system resolver (getaddrinfo), which blocks, so callers run it off the event loops.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

public enum HostResolver {
    /// The numeric address for `host`: the host itself when it is an IP literal (brackets
    /// removed), otherwise the first IPv4 address the system resolver gives, else the first IPv6.
    /// Blocking.
    public static func resolve(_ host: String) -> String? {
        let bare = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
        if let numeric = numericAddress(bare) { return numeric }
        return lookup(bare, family: AF_INET) ?? lookup(bare, family: AF_INET6)
    }

    public static func isIPLiteral(_ text: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, text, &v4) == 1 || inet_pton(AF_INET6, text, &v6) == 1
    }

    private static func lookup(_ host: String, family: Int32) -> String? {
        var hints = addrinfo()
        hints.ai_family = family
        #if canImport(Glibc)
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        #else
        hints.ai_socktype = SOCK_STREAM
        #endif
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, nil, &hints, &result) == 0, let first = result else { return nil }
        defer { freeaddrinfo(result) }
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        guard let address = first.pointee.ai_addr else { return nil }
        if family == AF_INET {
            var sin = address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee }
            guard inet_ntop(AF_INET, &sin.sin_addr, &buffer, socklen_t(buffer.count)) != nil else { return nil }
        } else {
            var sin6 = address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { $0.pointee }
            guard inet_ntop(AF_INET6, &sin6.sin6_addr, &buffer, socklen_t(buffer.count)) != nil else { return nil }
        }
        let length = buffer.firstIndex(of: 0) ?? buffer.count
        return String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

extension HostResolver {
    /// The canonical form of a numeric address, including IPv4 shorthands such as `127.1`
    /// (as `inet_aton` reads them); nil for names.
    public static func numericAddress(_ text: String) -> String? {
        let bare = text.hasPrefix("[") && text.hasSuffix("]") ? String(text.dropFirst().dropLast()) : text
        var v6 = in6_addr()
        if inet_pton(AF_INET6, bare, &v6) == 1 { return bare }
        guard bare.allSatisfy({ $0.isNumber || $0 == "." || $0 == "x" || $0 == "X" || $0.isHexDigit }) else { return nil }
        var v4 = in_addr()
        guard inet_aton(bare, &v4) != 0 else { return nil }
        var buffer = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN) + 1)
        guard inet_ntop(AF_INET, &v4, &buffer, socklen_t(buffer.count)) != nil else { return nil }
        let length = buffer.firstIndex(of: 0) ?? buffer.count
        return String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
