// A concrete place to send requests: an IP address and port, with a weight from discovery.

/// One address a bound name resolves to.
public struct Endpoint: Hashable, Sendable, CustomStringConvertible {
    /// A numeric IPv4 or IPv6 address (discovery resolves host names before they get here).
    public var host: String
    public var port: Int
    /// Relative share of traffic, from discovery (`HOST PORT * WEIGHT`); 1 unless stated.
    public var weight: Double

    public init(host: String, port: Int, weight: Double = 1.0) {
        self.host = host
        self.port = port
        self.weight = weight
    }

    /// The endpoint's identity, without its weight: two entries with the same address are one
    /// endpoint whose weight changed.
    public var address: Address { Address(host: host, port: port) }

    public var description: String { address.description }

    /// An IP address and port.
    public struct Address: Hashable, Sendable, Comparable, CustomStringConvertible {
        public var host: String
        public var port: Int

        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }

        /// `127.0.0.1:8080`, or `[::1]:8080` for IPv6.
        public var description: String {
            host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        }

        public static func < (lhs: Address, rhs: Address) -> Bool {
            (lhs.host, lhs.port) < (rhs.host, rhs.port)
        }
    }
}

/// What a bound name currently resolves to (Finagle's `Addr`).
public enum Addr: Hashable, Sendable {
    /// Discovery has not answered yet.
    case pending
    /// The name exists and has these endpoints (possibly none).
    case bound([Endpoint])
    /// The name does not exist.
    case neg
    /// Discovery failed and has no last-known-good answer.
    case failed(String)

    public var endpoints: [Endpoint] {
        if case .bound(let endpoints) = self { return endpoints }
        return []
    }
}
