// Which callers may call which logical names (a meshd extension; Linkerd had none): on an mTLS
// listener, each rule names peer identities — a certificate's URI SANs (SPIFFE IDs), DNS SANs or
// subject common name, exactly or by a `*` suffix — and the logical-name prefixes they may call.
// A request is allowed when one rule matches both; otherwise it is refused before it is routed.

/// A certificate's identities, as the rules see them.
public struct PeerIdentity: Sendable, Hashable {
    public var uris: [String]
    public var dnsNames: [String]
    public var commonName: String?
    /// The whole subject, `CN=web, O=Example`.
    public var subject: String
    /// SHA-256 of the certificate's DER, hex.
    public var certificateHash: String

    public init(uris: [String], dnsNames: [String], commonName: String?, subject: String, certificateHash: String) {
        self.uris = uris
        self.dnsNames = dnsNames
        self.commonName = commonName
        self.subject = subject
        self.certificateHash = certificateHash
    }

    /// Every identity, most specific first: URI SANs, DNS SANs, then the subject CN.
    public var names: [String] { uris + dnsNames + [commonName].compactMap { $0 } }

    /// The one that names the peer in logs and metrics.
    public var primary: String { names.first ?? subject }
}

/// `spiffe://cluster.local/ns/web/sa/frontend`, or `spiffe://cluster.local/ns/web/*`.
public struct IdentityPattern: Sendable, Hashable, CustomStringConvertible {
    public var text: String

    public init(_ text: String) { self.text = text }

    public func matches(_ identity: String) -> Bool {
        if text == "*" { return true }
        if text.hasSuffix("*") { return identity.hasPrefix(text.dropLast()) }
        return identity == text
    }

    public var description: String { text }
}

public struct AccessRule: Sendable, Hashable {
    public var identities: [IdentityPattern]
    /// Logical-name prefixes (`/svc/users` allows `/svc/users` and `/svc/users/v2`); empty: all.
    public var paths: [Path]

    public init(identities: [IdentityPattern], paths: [Path]) {
        self.identities = identities
        self.paths = paths
    }

    func matches(_ peer: PeerIdentity) -> Bool {
        peer.names.contains { name in identities.contains { $0.matches(name) } }
    }

    func allows(_ name: Path) -> Bool {
        paths.isEmpty || paths.contains { name.starts(with: $0) }
    }
}

public struct AccessRules: Sendable, Hashable {
    public var rules: [AccessRule]

    public init(_ rules: [AccessRule]) { self.rules = rules }

    /// Whether `peer` (nil: no certificate) may call `name`.
    public func allows(_ peer: PeerIdentity?, name: Path) -> Bool {
        guard let peer else { return false }
        return rules.contains { $0.matches(peer) && $0.allows(name) }
    }
}

/// Whether a certificate's DNS names (or, without any, its subject CN) are for `host`
/// (RFC 6125: case-insensitive, a `*` only as the whole leftmost label, matching one label).
public enum CertificateNames {
    public static func cover(_ host: String, dnsNames: [String], commonName: String?) -> Bool {
        let names = dnsNames.isEmpty ? [commonName].compactMap { $0 } : dnsNames
        return names.contains { matches(pattern: $0, host: host) }
    }

    public static func matches(pattern: String, host: String) -> Bool {
        let pattern = pattern.lowercased()
        let host = host.lowercased()
        guard pattern.hasPrefix("*.") else { return pattern == host }
        let suffix = pattern.dropFirst(1)  // ".example.com"
        guard host.hasSuffix(suffix), suffix.dropFirst().contains(".") else { return false }
        let label = host.dropLast(suffix.count)
        return !label.isEmpty && !label.contains(".")
    }
}
