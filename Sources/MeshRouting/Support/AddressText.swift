import NIOCore

/// `127.0.0.1:4140` or `[::1]:4140`.
public enum AddressText {
    public static func describe(_ address: SocketAddress) -> String {
        let ip = address.ipAddress ?? "?"
        let port = address.port ?? 0
        return ip.contains(":") ? "[\(ip)]:\(port)" : "\(ip):\(port)"
    }
}
