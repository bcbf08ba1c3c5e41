// Certificates, keys and CA bundles read from the files a config names, checked the way an
// operator needs: a file that is missing, unreadable, not PEM, expired or not yet valid, or a
// key that does not belong to its certificate, is an error naming the file, the key that named
// it and the reason — at start-up a config error at that key's line, on reload a logged
// rejection that leaves the old material serving.

#if canImport(Glibc)
import Glibc
#endif
import MeshConfig
import MeshCore
import NIOSSL

/// Why a TLS file cannot be used.
package struct TLSMaterialError: Error, Sendable, CustomStringConvertible {
    package var file: ConfiguredFile
    package var reason: String

    package init(_ file: ConfiguredFile, _ reason: String) {
        self.file = file
        self.reason = reason
    }

    package var description: String { "\(file.path): \(reason)" }

    /// As a config error at the key that named the file.
    package var configError: ConfigError {
        file.origin.error("\(file.path): \(reason)")
    }
}

/// What the admin page and the metrics say about one certificate (never anything of a key).
package struct CertificateSummary: Sendable, Hashable {
    package var subject: String
    package var issuer: String
    package var dnsNames: [String]
    package var uris: [String]
    package var ipAddresses: [String]
    package var serial: String
    /// SHA-256 of the certificate's DER encoding, hex.
    package var sha256: String
    /// The subject's CN attribute, if it has one.
    package var subjectCommonName: String?
    /// Seconds since the Unix epoch.
    package var notBefore: Int
    package var notAfter: Int

    init(_ certificate: NIOSSLCertificate) {
        let names = certificate.subjectName
        subject = Self.describe(names)
        // The last CN attribute, as TLS name checks read it; never parsed back out of the text
        // (an O of "x, CN=admin" must not make the holder "admin").
        subjectCommonName = names.last { $0.type == .commonName }?.value
        issuer = Self.describe(certificate.issuerName)
        var dns: [String] = []
        var uris: [String] = []
        var ips: [String] = []
        for name in certificate._subjectAlternativeNames() {
            let bytes = Array(name.contents)
            switch name.nameType {
            case .dnsName: dns.append(String(decoding: bytes, as: UTF8.self))
            case .uri: uris.append(String(decoding: bytes, as: UTF8.self))
            case .ipAddress: ips.append(Self.ipText(bytes))
            default: break
            }
        }
        dnsNames = dns
        self.uris = uris
        ipAddresses = ips
        serial = certificate.serialNumber.map { byte in
            let hex = String(byte, radix: 16)
            return hex.count == 1 ? "0" + hex : hex
        }.joined()
        sha256 = SHA256.hex((try? certificate.toDERBytes()) ?? [])
        notBefore = Int(certificate.notValidBefore)
        notAfter = Int(certificate.notValidAfter)
    }

    /// `CN=web, O=Example`: the name's attributes in certificate order.
    static func describe(_ names: [SSLCertificateName]) -> String {
        names.map { name -> String in
            let label: String
            switch name.type {
            case .commonName: label = "CN"
            case .organization: label = "O"
            case .organizationalUnit: label = "OU"
            case .country: label = "C"
            case .state: label = "ST"
            case .city: label = "L"
            case .emailAddress: label = "emailAddress"
            case .userId: label = "UID"
            default: label = "?"
            }
            return "\(label)=\(name.value)"
        }.joined(separator: ", ")
    }

    static func ipText(_ bytes: [UInt8]) -> String {
        if bytes.count == 4 { return bytes.map(String.init).joined(separator: ".") }
        guard bytes.count == 16 else { return bytes.map { String($0, radix: 16) }.joined(separator: ":") }
        return stride(from: 0, to: 16, by: 2).map { String(UInt16(bytes[$0]) << 8 | UInt16(bytes[$0 + 1]), radix: 16) }.joined(separator: ":")
    }

    /// For `/admin/tls.json`.
    package var json: JSONValue {
        .object([
            ("subject", .string(subject)), ("issuer", .string(issuer)),
            ("dnsNames", .array(dnsNames.map { .string($0) })), ("uris", .array(uris.map { .string($0) })),
            ("ipAddresses", .array(ipAddresses.map { .string($0) })), ("serial", .string(serial)),
            ("notBefore", .string(TLSFiles.utc(notBefore))), ("notAfter", .string(TLSFiles.utc(notAfter))),
            ("sha256", .string(sha256)),
        ])
    }
}

/// A certificate chain and its key, checked to belong together and to be valid now.
package struct CertifiedKey: Sendable {
    package var chain: [NIOSSLCertificate]
    package var key: NIOSSLPrivateKey
    package var leaf: CertificateSummary

    /// Reads `cert` (the leaf first, then any chain in the same file), `key`, and optional
    /// intermediates; `now` in seconds since the epoch.
    package static func load(cert: ConfiguredFile, key: ConfiguredFile, intermediates: ConfiguredFile?, now: Int) throws(TLSMaterialError) -> CertifiedKey {
        var chain = try TLSFiles.certificates(cert)
        if let intermediates { chain += try TLSFiles.certificates(intermediates) }
        let privateKey = try TLSFiles.privateKey(key)
        let leaf = CertificateSummary(chain[0])
        if leaf.notAfter < now {
            throw TLSMaterialError(cert, "the certificate expired at \(TLSFiles.utc(leaf.notAfter)) (subject \(leaf.subject)); renew it")
        }
        if leaf.notBefore > now {
            throw TLSMaterialError(cert, "the certificate is not valid until \(TLSFiles.utc(leaf.notBefore)) (subject \(leaf.subject)); check the clock or the certificate")
        }
        // Whether the key signs for the certificate: a TLS context refuses a mismatched pair.
        var probe = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(privateKey))
        probe.minimumTLSVersion = .tlsv12
        do {
            _ = try NIOSSLContext(configuration: probe)
        } catch {
            throw TLSMaterialError(key, "this private key does not belong to the certificate in \(cert.path) (subject \(leaf.subject))")
        }
        return CertifiedKey(chain: chain, key: privateKey, leaf: leaf)
    }
}

enum TLSFiles {
    /// Every certificate in a PEM file, in order.
    static func certificates(_ file: ConfiguredFile) throws(TLSMaterialError) -> [NIOSSLCertificate] {
        let text = try read(file)
        guard text.contains("-----BEGIN CERTIFICATE-----") else {
            if text.contains("PRIVATE KEY-----") {
                throw TLSMaterialError(file, "this is a private key, not a certificate; the certificate goes here and the key in keyPath")
            }
            throw TLSMaterialError(file, "no PEM certificate in the file (expected -----BEGIN CERTIFICATE-----)")
        }
        let certificates: [NIOSSLCertificate]
        do {
            certificates = try NIOSSLCertificate.fromPEMBytes(Array(text.utf8))
        } catch {
            throw TLSMaterialError(file, "a certificate in the file cannot be parsed (damaged PEM or not X.509)")
        }
        guard !certificates.isEmpty else { throw TLSMaterialError(file, "no certificate could be read from the file") }
        return certificates
    }

    /// A private key in PEM: PKCS#8 (`BEGIN PRIVATE KEY`), PKCS#1 (`BEGIN RSA PRIVATE KEY`) or
    /// SEC1 (`BEGIN EC PRIVATE KEY`).
    static func privateKey(_ file: ConfiguredFile) throws(TLSMaterialError) -> NIOSSLPrivateKey {
        let text = try read(file)
        if text.contains("BEGIN ENCRYPTED PRIVATE KEY") || text.contains("Proc-Type: 4,ENCRYPTED") {
            throw TLSMaterialError(file, "the private key is encrypted; meshd needs it unencrypted (openssl pkey -in KEY -out PLAIN), readable only by meshd's user")
        }
        guard text.contains("PRIVATE KEY-----") else {
            if text.contains("BEGIN CERTIFICATE") {
                throw TLSMaterialError(file, "this is a certificate, not a private key; the key goes here and the certificate in certPath")
            }
            throw TLSMaterialError(file, "no PEM private key in the file (expected PKCS#8 BEGIN PRIVATE KEY, PKCS#1 BEGIN RSA PRIVATE KEY or SEC1 BEGIN EC PRIVATE KEY)")
        }
        do {
            return try NIOSSLPrivateKey(bytes: Array(text.utf8), format: .pem)
        } catch {
            throw TLSMaterialError(file, "the private key cannot be parsed (damaged PEM, or an unsupported key type)")
        }
    }

    /// CA certificates to trust.
    static func trustRoots(_ files: [ConfiguredFile]) throws(TLSMaterialError) -> [NIOSSLCertificate] {
        var roots: [NIOSSLCertificate] = []
        for file in files { roots += try certificates(file) }
        return roots
    }

    /// The file's text; a missing or unreadable file is an error that says which.
    static func read(_ file: ConfiguredFile) throws(TLSMaterialError) -> String {
        // A FIFO or a device would block the reading thread (an event loop, on reload) or never end.
        var info = stat()
        if stat(file.path, &info) == 0, (info.st_mode & S_IFMT) != S_IFREG {
            let kind = (info.st_mode & S_IFMT) == S_IFDIR ? "a directory" : "not a regular file (a FIFO, socket or device)"
            throw TLSMaterialError(file, "\(kind); name the PEM file itself")
        }
        guard let handle = fopen(file.path, "r") else {
            let code = errno
            switch code {
            case ENOENT: throw TLSMaterialError(file, "no such file")
            case EACCES: throw TLSMaterialError(file, "permission denied (meshd runs as uid \(getuid()))")
            default: throw TLSMaterialError(file, "cannot open: \(String(cString: strerror(code)))")
            }
        }
        defer { fclose(handle) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16 * 1024)
        while true {
            let count = fread(&buffer, 1, buffer.count, handle)
            if count > 0 { bytes += buffer[0..<count] }
            if count < buffer.count {
                if ferror(handle) != 0 { throw TLSMaterialError(file, "cannot read: \(String(cString: strerror(errno)))") }
                break
            }
            if bytes.count > 4 * 1024 * 1024 { throw TLSMaterialError(file, "larger than 4 MiB; not a certificate or key file") }
        }
        guard !bytes.isEmpty else { throw TLSMaterialError(file, "the file is empty") }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// `2026-12-03 07:00:00 UTC`.
    static func utc(_ seconds: Int) -> String {
        var time = time_t(seconds)
        var parts = tm()
        gmtime_r(&time, &parts)
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday)) \(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) UTC"
    }
}
