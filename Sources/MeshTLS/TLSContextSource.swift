// One TLS context made from config files, kept current: `TLSReloader` asks every source once a
// second whether any of its files changed (size, modification time, inode — so a Kubernetes
// secret's symlink swap counts), and a changed set that loads and checks cleanly replaces the
// context for new handshakes; connections already open keep theirs. A set that does not load
// (half-written, mismatched, expired) is logged once with the file and reason, counted, and the
// old context keeps serving.

#if canImport(Glibc)
import Glibc
#endif
import Logging
import MeshConfig
import MeshTelemetry
import NIOConcurrencyHelpers
import NIOSSL
import Prometheus

/// What a source's context is for.
package enum TLSRole: Sendable, Hashable {
    /// A listener (`servers[].tls`, `admin.tls`), by router label and listen address.
    case server(router: String, address: String, ServerTLSConfig)
    /// Connections to endpoints (`client.tls`), by router label.
    case client(router: String, ClientTLSConfig)

    var router: String {
        switch self {
        case .server(let router, _, _), .client(let router, _): return router
        }
    }

    var side: String {
        switch self {
        case .server: return "server"
        case .client: return "client"
        }
    }

    package var protocols: [TLSProtocolVersion] {
        switch self {
        case .server(_, _, let config): return config.protocols
        case .client(_, let config): return config.protocols
        }
    }

    package var files: [ConfiguredFile] {
        switch self {
        case .server(_, _, let config): return config.files
        case .client(_, let config): return config.files
        }
    }
}

/// A loaded context and what it was made from.
package struct LoadedTLS: Sendable {
    package var context: NIOSSLContext
    /// The certificate meshd presents (a listener's, or a client's `clientAuth`), if any.
    package var own: CertificateSummary?
    /// The CA certificates it trusts (empty: the system's, or none asked for).
    package var trusted: [CertificateSummary]
    /// Unix seconds when it was loaded.
    package var loadedAt: Int
}

package final class TLSContextSource: Sendable {
    package let role: TLSRole
    private let current: NIOLockedValueBox<LoadedTLS>
    /// The files' identities when last loaded, and the last set that failed (logged once).
    private let seen: NIOLockedValueBox<(loaded: [FileStamp], rejected: [FileStamp]?)>
    private let metrics: TLSMetrics
    private let expiryGauges: NIOLockedValueBox<[Gauge]>
    private let logger: Logger

    /// Loads the files; a problem is an error naming the file and the key that named it.
    package init(_ role: TLSRole, metrics: TLSMetrics, logger: Logger) throws(TLSMaterialError) {
        self.role = role
        self.metrics = metrics
        self.logger = logger
        let stamps = role.files.map { FileStamp($0.path) }
        let loaded = try Self.load(role, now: Self.now())
        current = NIOLockedValueBox(loaded)
        seen = NIOLockedValueBox((stamps, nil))
        expiryGauges = NIOLockedValueBox([])
        publishExpiry(loaded)
    }

    /// The context for a new handshake.
    package var context: NIOSSLContext { current.withLockedValue { $0.context } }

    package var loaded: LoadedTLS { current.withLockedValue { $0 } }

    /// Reloads when a file changed since the last load (or the last rejected attempt).
    package func reloadIfChanged() {
        let stamps = role.files.map { FileStamp($0.path) }
        let changed = seen.withLockedValue { seen -> Bool in
            stamps != seen.loaded && stamps != seen.rejected
        }
        guard changed else { return }
        let files = role.files.map(\.path).joined(separator: ", ")
        do {
            let loaded = try Self.load(role, now: Self.now())
            current.withLockedValue { $0 = loaded }
            seen.withLockedValue { $0 = (stamps, nil) }
            publishExpiry(loaded)
            metrics.reloads(result: "success").increment()
            logger.info("TLS files reloaded; new handshakes use them", metadata: [
                LogKeys.router: "\(role.router)", LogKeys.tlsSide: "\(role.side)", LogKeys.tlsFiles: "\(files)",
                LogKeys.tlsSubject: "\(loaded.own?.subject ?? "-")", LogKeys.tlsSerial: "\(loaded.own?.serial ?? "-")",
                LogKeys.tlsNotAfter: "\(loaded.own.map { TLSFiles.utc($0.notAfter) } ?? "-")",
            ])
        } catch {
            seen.withLockedValue { $0.rejected = stamps }
            metrics.reloads(result: "failure").increment()
            logger.error("changed TLS files rejected; the previous certificates keep serving", metadata: [
                LogKeys.router: "\(role.router)", LogKeys.tlsSide: "\(role.side)", LogKeys.file: "\(error.file.path)", LogKeys.reason: "\(error.reason)",
            ])
        }
    }

    private func publishExpiry(_ loaded: LoadedTLS) {
        var gauges: [Gauge] = []
        var pairs: [(path: String, summary: CertificateSummary)] = []
        switch role {
        case .server(_, _, let config):
            if let own = loaded.own { pairs.append((config.certPath.path, own)) }
            if let ca = config.caCertPath { pairs += loaded.trusted.map { (ca.path, $0) } }
        case .client(_, let config):
            if let own = loaded.own, let auth = config.clientAuth { pairs.append((auth.certPath.path, own)) }
            let trustPaths = config.trustCerts.map(\.path) + [config.trustCertsBundle?.path].compactMap { $0 }
            pairs += loaded.trusted.map { (trustPaths.joined(separator: ","), $0) }
        }
        for (path, summary) in pairs.prefix(64) {
            let gauge = metrics.expiry(router: role.router, side: role.side, path: path, subject: summary.subject)
            gauge.set(Double(summary.notAfter))
            gauges.append(gauge)
        }
        let old = expiryGauges.withLockedValue { held in
            defer { held = gauges }
            return held
        }
        // Series of certificates no longer loaded go (a rotated subject must not linger).
        for gauge in old where !gauges.contains(where: { $0 === gauge }) { metrics.remove(gauge) }
    }

    static func now() -> Int { Int(time(nil)) }

    static func load(_ role: TLSRole, now: Int) throws(TLSMaterialError) -> LoadedTLS {
        switch role {
        case .server(_, _, let config): return try ServerTLSContexts.make(config, now: now)
        case .client(_, let config): return try ClientTLSContexts.make(config, now: now)
        }
    }
}

/// What identifies a file's content without reading it.
struct FileStamp: Hashable {
    var device: UInt64 = 0
    var inode: UInt64 = 0
    var size: Int64 = -1
    var modified: Int = 0
    var modifiedNanoseconds: Int = 0

    init(_ path: String) {
        var info = stat()
        guard stat(path, &info) == 0 else { return }
        device = UInt64(info.st_dev)
        inode = UInt64(info.st_ino)
        size = Int64(info.st_size)
        modified = info.st_mtim.tv_sec
        modifiedNanoseconds = info.st_mtim.tv_nsec
    }
}

/// Listener contexts.
enum ServerTLSContexts {
    static func make(_ config: ServerTLSConfig, now: Int) throws(TLSMaterialError) -> LoadedTLS {
        let own = try CertifiedKey.load(cert: config.certPath, key: config.keyPath, intermediates: config.intermediateCertsPath, now: now)
        var tls = TLSConfiguration.makeServerConfiguration(certificateChain: own.chain.map { .certificate($0) }, privateKey: .privateKey(own.key))
        tls.minimumTLSVersion = config.protocols.first.map(version) ?? .tlsv12
        tls.maximumTLSVersion = config.protocols.last.map(version) ?? .tlsv13
        var trusted: [CertificateSummary] = []
        if let ca = config.caCertPath {
            let roots = try TLSFiles.trustRoots([ca])
            trusted = roots.map(CertificateSummary.init)
            tls.trustRoots = .certificates(roots)
            tls.sendCANameList = true
            tls.certificateVerification = config.requireClientAuth ? .noHostnameVerification : .optionalVerification
        } else {
            tls.certificateVerification = .none
        }
        if let ciphers = config.ciphers { tls.cipherSuites = ciphers.joined(separator: ":") }
        let context: NIOSSLContext
        do {
            context = try NIOSSLContext(configuration: tls)
        } catch {
            // Cipher names were checked when the config was read (CipherList).
            throw TLSMaterialError(config.certPath, "cannot make a TLS context: \(error)")
        }
        return LoadedTLS(context: context, own: own.leaf, trusted: trusted, loadedAt: now)
    }
}

/// Contexts for connections to endpoints.
enum ClientTLSContexts {
    static func make(_ config: ClientTLSConfig, now: Int) throws(TLSMaterialError) -> LoadedTLS {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = config.protocols.first.map(version) ?? .tlsv12
        tls.maximumTLSVersion = config.protocols.last.map(version) ?? .tlsv13
        tls.certificateVerification = config.disableValidation ? .none : .fullVerification
        var trusted: [CertificateSummary] = []
        let trustFiles = config.trustCerts + [config.trustCertsBundle].compactMap { $0 }
        if !trustFiles.isEmpty {
            let roots = try TLSFiles.trustRoots(trustFiles)
            trusted = roots.map(CertificateSummary.init)
            tls.trustRoots = .certificates(roots)
        }
        var own: CertificateSummary?
        if let auth = config.clientAuth {
            let key = try CertifiedKey.load(cert: auth.certPath, key: auth.keyPath, intermediates: auth.intermediateCertsPath, now: now)
            tls.certificateChain = key.chain.map { .certificate($0) }
            tls.privateKey = .privateKey(key.key)
            own = key.leaf
        }
        if let ciphers = config.ciphers { tls.cipherSuites = ciphers.joined(separator: ":") }
        do {
            return LoadedTLS(context: try NIOSSLContext(configuration: tls), own: own, trusted: trusted, loadedAt: now)
        } catch {
            throw TLSMaterialError(ConfiguredFile(path: "tls", origin: config.origin), "cannot make a TLS context: \(error)")
        }
    }
}

private func version(_ version: TLSProtocolVersion) -> TLSVersion {
    switch version {
    case .tls12: return .tlsv12
    case .tls13: return .tlsv13
    }
}
