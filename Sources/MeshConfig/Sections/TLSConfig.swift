import MeshCore

/// A TLS protocol version meshd speaks. Older ones (SSLv3, TLS 1.0, 1.1) are config errors.
public enum TLSProtocolVersion: String, Sendable, Hashable, CaseIterable, Comparable {
    case tls12 = "TLSv1.2"
    case tls13 = "TLSv1.3"

    public static func < (a: TLSProtocolVersion, b: TLSProtocolVersion) -> Bool {
        a == .tls12 && b == .tls13
    }

    /// `protocols: [TLSv1.2, TLSv1.3]` (Java's names, as Linkerd took them); the default is both.
    static func readList(_ node: ConfigNode) -> [TLSProtocolVersion]? {
        guard let items = node.sequence else { return nil }
        var versions: [TLSProtocolVersion] = []
        for item in items {
            guard let name = item.string else { continue }
            if let version = TLSProtocolVersion.allCases.first(where: { $0.rawValue.lowercased() == name.lowercased() }) {
                if !versions.contains(version) { versions.append(version) }
            } else if ["sslv2", "sslv3", "tlsv1", "tlsv1.0", "tlsv1.1"].contains(name.lowercased()) {
                item.error("\(name) is not supported: versions before TLS 1.2 are insecure; use TLSv1.2 or TLSv1.3")
            } else {
                item.error("'\(name)' is not a TLS version; expected TLSv1.2 or TLSv1.3\(Suggestion.didYouMean(name, in: allCases.map(\.rawValue)))")
            }
        }
        if versions.isEmpty, !items.isEmpty { return nil }
        if items.isEmpty {
            node.error("an empty list allows no TLS version; remove the key for TLSv1.2 and TLSv1.3")
            return nil
        }
        return versions.sorted()
    }
}

/// A file named in the config, with where it was named, so that a problem with the file (absent,
/// unreadable, not a certificate, not matching its key) is reported at that key's line.
public struct ConfiguredFile: Sendable, Hashable, CustomStringConvertible {
    public var path: String
    public var origin: ConfigOrigin

    public init(path: String, origin: ConfigOrigin = .builtIn) {
        self.path = path
        self.origin = origin
    }

    public var description: String { path }

    static func read(_ m: ConfigMapping, _ key: String, required: Bool, hint: String = "") -> ConfiguredFile? {
        let node = required ? m.required(key, hint: hint) : m.optional(key)
        guard let node, let path = node.string else { return nil }
        guard !path.isEmpty else {
            node.error("expected a file path, found an empty value")
            return nil
        }
        return ConfiguredFile(path: path, origin: node.origin)
    }
}

/// `routers[].servers[].tls` and `admin.tls`: a TLS listener.
public struct ServerTLSConfig: Sendable, Hashable, JSONRepresentable {
    /// Default true; false keeps the listener plain (the block stays for later).
    public var enabled = true
    /// The listener's certificate (PEM; more certificates after the first are its chain).
    public var certPath: ConfiguredFile
    /// Its private key: PEM in PKCS#8, PKCS#1 (RSA) or SEC1 (EC) form.
    public var keyPath: ConfiguredFile
    /// Intermediate certificates sent after the certificate (PEM). Default none.
    public var intermediateCertsPath: ConfiguredFile?
    /// CA certificates that client certificates must chain to (PEM). Default: none.
    public var caCertPath: ConfiguredFile?
    /// Refuse clients without a valid certificate (mutual TLS). Default false; true needs
    /// `caCertPath`.
    public var requireClientAuth = false
    /// Versions offered. Default TLSv1.2 and TLSv1.3.
    public var protocols: [TLSProtocolVersion] = [.tls12, .tls13]
    /// TLS 1.2 cipher suites, OpenSSL names, in order of preference. Default: NIOSSL's list
    /// (ECDHE with AES-GCM or ChaCha20-Poly1305). TLS 1.3's suites are not configurable.
    public var ciphers: [String]?
    /// Which client identities may call which logical names (meshd's own key); nil: every
    /// client the handshake let in may call anything.
    public var allow: AccessRules?
    public var origin: ConfigOrigin = .builtIn

    public init(certPath: ConfiguredFile, keyPath: ConfiguredFile) {
        self.certPath = certPath
        self.keyPath = keyPath
    }

    /// Every file the listener reads, for watching and reporting.
    public var files: [ConfiguredFile] {
        [certPath, keyPath] + [intermediateCertsPath, caCertPath].compactMap { $0 }
    }

    static func read(_ node: ConfigNode) -> ServerTLSConfig? {
        guard let m = node.mapping else { return nil }
        defer { m.finish() }
        let enabled = m.bool("enabled") ?? true
        let cert = ConfiguredFile.read(m, "certPath", required: true, hint: "the listener's certificate, PEM")
        let key = ConfiguredFile.read(m, "keyPath", required: true, hint: "the certificate's private key, PEM (PKCS#8, PKCS#1 or SEC1)")
        var config = ServerTLSConfig(certPath: cert ?? ConfiguredFile(path: ""), keyPath: key ?? ConfiguredFile(path: ""))
        config.enabled = enabled
        config.origin = node.origin
        config.intermediateCertsPath = ConfiguredFile.read(m, "intermediateCertsPath", required: false)
        config.caCertPath = ConfiguredFile.read(m, "caCertPath", required: false)
        config.requireClientAuth = m.bool("requireClientAuth") ?? false
        if let protocols = m.optional("protocols"), let versions = TLSProtocolVersion.readList(protocols) { config.protocols = versions }
        if let ciphers = m.optional("ciphers") { config.ciphers = CipherList.read(ciphers) }
        if let allow = m.optional("allow") {
            config.allow = AccessRulesSyntax.read(allow)
            if !config.requireClientAuth {
                allow.error("allow needs requireClientAuth: true (and caCertPath): without client certificates there are no identities to allow")
            }
        }
        if config.requireClientAuth, config.caCertPath == nil, m.has("requireClientAuth") {
            _ = m.required("caCertPath", hint: "requireClientAuth: true needs the CA certificates that client certificates must chain to")
        }
        guard cert != nil, key != nil else { return nil }
        return config
    }

    public var json: JSONValue {
        .object([
            ("enabled", .bool(enabled)),
            ("certPath", .string(certPath.path)),
            ("keyPath", .string(keyPath.path)),
            ("intermediateCertsPath", intermediateCertsPath.map { .string($0.path) } ?? .null),
            ("caCertPath", caCertPath.map { .string($0.path) } ?? .null),
            ("requireClientAuth", .bool(requireClientAuth)),
            ("protocols", .array(protocols.map { .string($0.rawValue) })),
            ("ciphers", ciphers.map { .array($0.map { .string($0) }) } ?? .null),
            ("allow", allow.map(AccessRulesSyntax.json) ?? .null),
        ])
    }
}

/// `allow: [{identities: [spiffe://mesh/web, spiffe://mesh/jobs/*], paths: [/svc/users]}]`.
enum AccessRulesSyntax {
    static func read(_ node: ConfigNode) -> AccessRules? {
        guard let items = node.sequence else { return nil }
        if items.isEmpty { node.error("an empty allow list lets no one in; list rules, or remove the key to allow every client with a valid certificate") }
        var rules: [AccessRule] = []
        for item in items {
            guard let m = item.mapping else { continue }
            defer { m.finish() }
            var identities: [IdentityPattern] = []
            if let list = m.required("identities", hint: "the client identities (URI or DNS SANs, or subject CN; a trailing * matches any suffix) this rule lets in")?.sequence {
                for entry in list {
                    guard let text = entry.string else { continue }
                    if text.isEmpty {
                        entry.error("expected an identity, found an empty value")
                    } else if text.dropLast().contains("*") {
                        entry.error("'\(text)': * may only end an identity (spiffe://mesh/ns/web/*)")
                    } else {
                        identities.append(IdentityPattern(text))
                    }
                }
                if list.isEmpty { m.origin.error("identities is empty; a rule needs at least one") }
            }
            var paths: [Path] = []
            if let list = m.optional("paths")?.sequence {
                for entry in list {
                    guard let text = entry.string else { continue }
                    do {
                        paths.append(try Path.read(text))
                    } catch {
                        entry.error("'\(text)' is not a path: \(error); logical names look like /svc/users")
                    }
                }
            }
            rules.append(AccessRule(identities: identities, paths: paths))
        }
        return AccessRules(rules)
    }

    static func json(_ rules: AccessRules) -> JSONValue {
        .array(rules.rules.map { rule in
            .object([
                ("identities", .array(rule.identities.map { .string($0.text) })),
                ("paths", .array(rule.paths.map { .string($0.description) })),
            ])
        })
    }
}

/// `client.tls` and `client.configs[].tls`: TLS to endpoints.
public struct ClientTLSConfig: Sendable, Hashable, JSONRepresentable {
    /// The name the endpoint's certificate must carry (SAN DNS, or subject CN when it has no
    /// SAN), and the SNI sent. May use the client prefix's captures: `{service}.example.com`.
    /// Required unless `disableValidation`.
    public var commonName: String?
    /// Skip certificate validation entirely (any certificate, any name). Unsafe; logged at
    /// start-up. Default false.
    public var disableValidation = false
    /// CA certificate files to validate endpoints with (PEM). With neither this nor
    /// `trustCertsBundle`, the system's trust store.
    public var trustCerts: [ConfiguredFile] = []
    /// One PEM file holding several CA certificates.
    public var trustCertsBundle: ConfiguredFile?
    /// Versions offered. Default TLSv1.2 and TLSv1.3.
    public var protocols: [TLSProtocolVersion] = [.tls12, .tls13]
    public var ciphers: [String]?
    /// A certificate to present (mutual TLS).
    public var clientAuth: ClientAuthConfig?
    public var origin: ConfigOrigin = .builtIn

    public init() {}

    public var files: [ConfiguredFile] {
        trustCerts + [trustCertsBundle].compactMap { $0 } + (clientAuth?.files ?? [])
    }

    static func read(_ node: ConfigNode) -> ClientTLSConfig? {
        guard let m = node.mapping else { return nil }
        defer { m.finish() }
        var config = ClientTLSConfig()
        config.origin = node.origin
        // Linkerd 0.x's shape (`kind: io.l5d.static`, `caCertPath`), replaced in Linkerd 1.0.
        m.unsupported(["kind", "caCertPath"], "this is Linkerd 0.x's client TLS; since Linkerd 1.0 it is commonName plus trustCerts: [CA file] (caCertPath: X becomes trustCerts: [X]; kind: io.l5d.noValidation becomes disableValidation: true)")
        config.disableValidation = m.bool("disableValidation") ?? false
        if let name = m.optional("commonName") {
            if let value = name.string {
                if value.isEmpty {
                    name.error("expected a host name, found an empty value")
                } else if IPAddressSyntax.isIPv4(value) || IPAddressSyntax.isIPv6(value.filter { $0 != "[" && $0 != "]" }) {
                    name.error("'\(value)' is an IP address; commonName is the DNS name endpoint certificates carry (meshd does not check IP addresses in certificates)")
                } else {
                    config.commonName = value
                }
                if let problem = NameTemplate.problem(in: value) { name.error(problem) }
            }
        } else if !config.disableValidation {
            _ = m.required("commonName", hint: "the name endpoint certificates must carry, e.g. \"{service}.example.com\"; or disableValidation: true (unsafe)")
        }
        if let list = m.optional("trustCerts"), let items = list.sequence {
            for item in items {
                guard let path = item.string else { continue }
                if path.isEmpty { item.error("expected a file path, found an empty value") } else { config.trustCerts.append(ConfiguredFile(path: path, origin: item.origin)) }
            }
        }
        config.trustCertsBundle = ConfiguredFile.read(m, "trustCertsBundle", required: false)
        if let protocols = m.optional("protocols"), let versions = TLSProtocolVersion.readList(protocols) { config.protocols = versions }
        if let ciphers = m.optional("ciphers") { config.ciphers = CipherList.read(ciphers) }
        if let auth = m.optional("clientAuth") { config.clientAuth = ClientAuthConfig.read(auth) }
        return config
    }

    public var json: JSONValue {
        .object([
            ("commonName", commonName.map { .string($0) } ?? .null),
            ("disableValidation", .bool(disableValidation)),
            ("trustCerts", .array(trustCerts.map { .string($0.path) })),
            ("trustCertsBundle", trustCertsBundle.map { .string($0.path) } ?? .null),
            ("protocols", .array(protocols.map { .string($0.rawValue) })),
            ("ciphers", ciphers.map { .array($0.map { .string($0) }) } ?? .null),
            ("clientAuth", clientAuth?.json ?? .null),
        ])
    }
}

/// `client.tls.clientAuth`: the certificate meshd presents to endpoints.
public struct ClientAuthConfig: Sendable, Hashable, JSONRepresentable {
    public var certPath: ConfiguredFile
    public var keyPath: ConfiguredFile
    public var intermediateCertsPath: ConfiguredFile?

    public var files: [ConfiguredFile] { [certPath, keyPath] + [intermediateCertsPath].compactMap { $0 } }

    static func read(_ node: ConfigNode) -> ClientAuthConfig? {
        guard let m = node.mapping else { return nil }
        defer { m.finish() }
        let cert = ConfiguredFile.read(m, "certPath", required: true, hint: "the certificate to present, PEM")
        let key = ConfiguredFile.read(m, "keyPath", required: true, hint: "its private key, PEM (PKCS#8, PKCS#1 or SEC1)")
        let intermediates = ConfiguredFile.read(m, "intermediateCertsPath", required: false)
        guard let cert, let key else { return nil }
        return ClientAuthConfig(certPath: cert, keyPath: key, intermediateCertsPath: intermediates)
    }

    public var json: JSONValue {
        .object([
            ("certPath", .string(certPath.path)),
            ("keyPath", .string(keyPath.path)),
            ("intermediateCertsPath", intermediateCertsPath.map { .string($0.path) } ?? .null),
        ])
    }
}

/// `ciphers: [ECDHE-RSA-AES128-GCM-SHA256, …]`: OpenSSL names of the TLS 1.2 suites BoringSSL
/// has. Checked here, name by name: handed an unknown name, the TLS library stops the process.
enum CipherList {
    static let known = [
        "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
        "ECDHE-ECDSA-AES128-SHA", "ECDHE-RSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA", "ECDHE-RSA-AES256-SHA",
        "AES128-GCM-SHA256", "AES256-GCM-SHA384", "AES128-SHA", "AES256-SHA",
    ]

    static func read(_ node: ConfigNode) -> [String]? {
        guard let items = node.sequence else { return nil }
        var names: [String] = []
        for item in items {
            guard let name = item.string else { continue }
            if known.contains(name) {
                if !names.contains(name) { names.append(name) }
            } else if name.hasPrefix("TLS_") {
                item.error("'\(name)' is a TLS 1.3 suite; TLS 1.3's suites are not configurable (ciphers lists TLS 1.2 suites)")
            } else {
                item.error("'\(name)' is not a TLS 1.2 cipher suite meshd knows\(Suggestion.didYouMean(name, in: known)); one of \(known.joined(separator: ", "))")
            }
        }
        if items.isEmpty { node.error("an empty list allows no cipher suite; remove the key for the defaults") }
        return names.isEmpty ? nil : names
    }
}

/// `{service}.example.com`: a name with the client prefix's captures in braces.
public enum NameTemplate {
    /// What is wrong with a template's braces, if anything.
    static func problem(in template: String) -> String? {
        var open = false
        var name = ""
        for character in template {
            switch character {
            case "{":
                if open { return "'{' inside a {capture} in '\(template)'" }
                open = true
                name = ""
            case "}":
                if !open { return "'}' without '{' in '\(template)'" }
                if name.isEmpty { return "an empty {} in '\(template)'; name a capture of the client prefix, e.g. {service}" }
                open = false
            default:
                if open { name.append(character) }
            }
        }
        return open ? "an unclosed '{' in '\(template)'" : nil
    }

    /// The capture names a template uses.
    static func variables(in template: String) -> [String] {
        var names: [String] = []
        var name: String?
        for character in template {
            switch character {
            case "{": name = ""
            case "}":
                if let name { names.append(name) }
                name = nil
            default:
                if name != nil { name!.append(character) }
            }
        }
        return names
    }

    /// The template with each `{name}` replaced by its capture; nil when one is not captured.
    public static func expand(_ template: String, captures: [String: String]) -> String? {
        var out = ""
        var name: String?
        for character in template {
            switch character {
            case "{": name = ""
            case "}":
                guard let key = name, let value = captures[key] else { return nil }
                out += value
                name = nil
            default:
                if name != nil { name!.append(character) } else { out.append(character) }
            }
        }
        return out
    }
}
