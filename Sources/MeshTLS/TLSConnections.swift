// TLS on the wire: a listener's connections (`ServerTLSTransport`, in front of the HTTP/1 codec)
// and connections to endpoints (`TLSUpstream`, in front of another protocol's handlers). A
// handshake that fails is counted by a reason from a fixed set and logged (at most ten lines a
// second per router and side); a client whose handshake fails never reaches the codec, and an
// endpoint's is a failed connection attempt, which the pool reports as such.

#if canImport(Glibc)
import Glibc
#endif
import Logging
import MeshConfig
import MeshCore
import MeshRouting
import MeshTelemetry
import NIOConcurrencyHelpers
import NIOCore
import NIOSSL
import NIOTLS
import Prometheus

/// Why a handshake failed, as a metric label (a fixed set: never text a peer chose).
package enum TLSFailureKind: String, Sendable, CaseIterable {
    case noCertificate = "no_certificate"
    case untrustedCertificate = "untrusted_certificate"
    case badCertificate = "bad_certificate"
    case expiredCertificate = "expired_certificate"
    case notYetValidCertificate = "not_yet_valid_certificate"
    case nameMismatch = "name_mismatch"
    case protocolVersion = "protocol_version"
    case noSharedCipher = "no_shared_cipher"
    case notTLS = "not_tls"
    case closed
    case other

    /// Reads BoringSSL's reason codes out of an error; a verification failure is made precise
    /// from the peer's certificate, when it sent one (BoringSSL reports only that it failed).
    static func classify(_ error: any Error, peerCertificate: NIOSSLCertificate?) -> TLSFailureKind {
        let kind = classify(error)
        guard kind == .untrustedCertificate, let certificate = peerCertificate else { return kind }
        let now = time(nil)
        if certificate.notValidAfter < now { return .expiredCertificate }
        if certificate.notValidBefore > now { return .notYetValidCertificate }
        return kind
    }

    static func classify(_ error: any Error) -> TLSFailureKind {
        if let extra = error as? NIOSSLExtraError, extra == .failedToValidateHostname || extra == .serverHostnameImpossibleToMatch { return .nameMismatch }
        if let ssl = error as? NIOSSLError {
            switch ssl {
            case .uncleanShutdown: return .closed
            default: break
            }
        }
        if error is ChannelError || error is IOError { return .closed }
        let text = String(describing: error).uppercased()
        if text.contains("CERTIFICATE_EXPIRED") || text.contains("CERTIFICATE_HAS_EXPIRED") { return .expiredCertificate }
        if text.contains("PEER_DID_NOT_RETURN_A_CERTIFICATE") || text.contains("CERTIFICATE_REQUIRED") { return .noCertificate }
        if text.contains("UNKNOWN_CA") || text.contains("CERTIFICATE_VERIFY_FAILED") || text.contains("UNABLE_TO_GET_ISSUER") { return .untrustedCertificate }
        if text.contains("BAD_CERTIFICATE") || text.contains("CERTIFICATE_UNKNOWN") || text.contains("UNSUPPORTED_CERTIFICATE") { return .badCertificate }
        if text.contains("PROTOCOL_VERSION") || text.contains("UNSUPPORTED_PROTOCOL") { return .protocolVersion }
        if text.contains("NO_SHARED_CIPHER") || text.contains("HANDSHAKE_FAILURE_ON_CLIENT_HELLO") || text.contains("NO_CIPHERS") { return .noSharedCipher }
        if text.contains("HTTP_REQUEST") || text.contains("WRONG_VERSION_NUMBER") || text.contains("HTTPS_PROXY_REQUEST") || text.contains("PACKET_LENGTH_TOO_LONG") { return .notTLS }
        return .other
    }

    /// For a person: what went wrong and what to check.
    var explanation: String {
        switch self {
        case .noCertificate: return "the client sent no certificate and this listener requires one (requireClientAuth)"
        case .untrustedCertificate: return "the peer's certificate does not chain to a trusted CA"
        case .badCertificate: return "the peer rejected or sent an unusable certificate"
        case .expiredCertificate: return "the peer's certificate has expired"
        case .notYetValidCertificate: return "the peer's certificate is not valid yet (check the clocks)"
        case .nameMismatch: return "the peer's certificate is not for the expected name"
        case .protocolVersion: return "no TLS version in common (meshd speaks TLS 1.2 and 1.3 only)"
        case .noSharedCipher: return "no cipher suite in common"
        case .notTLS: return "the peer does not speak TLS (plain HTTP to a TLS port?)"
        case .closed: return "the connection closed during the handshake"
        case .other: return "the handshake failed"
        }
    }
}

/// An error from the TLS stack in a few words: BoringSSL's reason codes (`CERTIFICATE_VERIFY_FAILED`)
/// without the source paths and numbers around them.
enum TLSErrorText {
    static func describe(_ error: any Error) -> String {
        if let extra = error as? NIOSSLExtraError {
            switch extra {
            case .failedToValidateHostname: return "the certificate's names do not include the expected one"
            default: return "\(extra)"
            }
        }
        if let ssl = error as? NIOSSLError, case .uncleanShutdown = ssl { return "the peer closed the connection" }
        let text = String(describing: error)
        var reasons: [String] = []
        var rest = Substring(text)
        while let range = rest.range(of: "OPENSSL_internal:") {
            let after = rest[range.upperBound...]
            let reason = after.prefix { $0.isUppercase || $0.isNumber || $0 == "_" }
            if !reason.isEmpty, !reasons.contains(String(reason)) { reasons.append(String(reason)) }
            rest = after.dropFirst(reason.count)
        }
        if !reasons.isEmpty { return reasons.joined(separator: ", ") }
        return text.count > 300 ? String(text.prefix(300)) + "…" : text
    }
}

/// Handshake counters and a log limit, per router and side.
final class HandshakeRecorder: Sendable {
    private let router: String
    private let side: String
    private let metrics: TLSMetrics
    private let successes: Counter
    private let failures: [TLSFailureKind: Counter]
    private let logger: Logger
    private let logWindow = NIOLockedValueBox((second: 0, lines: 0, suppressed: 0))

    init(router: String, side: String, metrics: TLSMetrics, logger: Logger) {
        self.router = router
        self.side = side
        self.metrics = metrics
        self.logger = logger
        successes = metrics.handshakes(router: router, side: side, result: "success")
        var failures: [TLSFailureKind: Counter] = [:]
        for kind in TLSFailureKind.allCases { failures[kind] = metrics.handshakes(router: router, side: side, result: kind.rawValue) }
        self.failures = failures
    }

    func succeeded() { successes.increment() }

    func failed(_ error: any Error, peer: String, peerCertificate: NIOSSLCertificate? = nil) -> TLSFailureKind {
        let kind = TLSFailureKind.classify(error, peerCertificate: peerCertificate)
        failures[kind]?.increment()
        let now = Int(NIODeadline.now().uptimeNanoseconds / 1_000_000_000)
        let (log, suppressed) = logWindow.withLockedValue { window -> (Bool, Int) in
            if window.second != now {
                let suppressed = window.suppressed
                window = (now, 1, 0)
                return (true, suppressed)
            }
            guard window.lines < 10 else {
                window.suppressed += 1
                return (false, 0)
            }
            window.lines += 1
            return (true, 0)
        }
        if log {
            var metadata: Logger.Metadata = [
                LogKeys.router: "\(router)", LogKeys.tlsSide: "\(side)", LogKeys.peer: "\(peer)",
                LogKeys.reason: "\(kind.explanation)", LogKeys.error: "\(TLSErrorText.describe(error))",
            ]
            if suppressed > 0 { metadata["meshd.suppressed"] = "\(suppressed)" }
            logger.info("TLS handshake failed", metadata: metadata)
        }
        return kind
    }
}

// MARK: listeners

/// TLS on a listener's connections.
package struct ServerTLSTransport: ListenerTransport {
    let source: TLSContextSource
    let recorder: HandshakeRecorder

    package init(source: TLSContextSource, metrics: TLSMetrics, logger: Logger) {
        self.source = source
        recorder = HandshakeRecorder(router: source.role.router, side: "server", metrics: metrics, logger: logger)
    }

    package func configure(_ channel: any Channel) throws {
        let sync = channel.pipeline.syncOperations
        try sync.addHandler(NIOSSLServerHandler(context: source.context))
        try sync.addHandler(ServerHandshakeObserver(recorder: recorder))
    }

    package func peer(of channel: any Channel) -> PeerIdentity? {
        guard let handler = try? channel.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self),
              let certificate = handler.peerCertificate else { return nil }
        let summary = CertificateSummary(certificate)
        return PeerIdentity(
            uris: summary.uris, dnsNames: summary.dnsNames, commonName: summary.subjectCommonName,
            subject: summary.subject, certificateHash: summary.sha256
        )
    }

    package var ownIdentity: String? { source.loaded.own?.uris.first }
}

/// Right behind the TLS handler: counts the handshake, and keeps a failed one (and any TLS
/// error) from reaching the HTTP codec, which would try to answer it; the connection closes.
final class ServerHandshakeObserver: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let recorder: HandshakeRecorder
    private var handshakeDone = false
    private var failed = false

    init(recorder: HandshakeRecorder) {
        self.recorder = recorder
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event {
            handshakeDone = true
            recorder.succeeded()
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard !handshakeDone else {
            // After the handshake: a TLS error means the stream is broken; the codec cannot
            // answer over it either.
            if error is NIOSSLError || error is BoringSSLError {
                context.close(promise: nil)
                return
            }
            context.fireErrorCaught(error)
            return
        }
        if !failed {
            failed = true
            let peer = context.channel.remoteAddress.map { AddressText.describe($0) } ?? "?"
            let certificate = (try? context.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self))?.peerCertificate
            _ = recorder.failed(error, peer: peer, peerCertificate: certificate)
        }
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !handshakeDone && !failed {
            // Closed before finishing the handshake, without an error (a port scan, a probe).
            failed = true
            let peer = context.channel.remoteAddress.map { AddressText.describe($0) } ?? "?"
            _ = recorder.failed(NIOSSLError.uncleanShutdown, peer: peer)
        }
        context.fireChannelInactive()
    }
}

// MARK: endpoints

/// TLS to endpoints, in front of another protocol (HTTP/1).
package struct TLSUpstream: UpstreamProtocol {
    let source: TLSContextSource
    /// The SNI sent and the name the certificate must carry; nil with `disableValidation`.
    let serverName: String?
    let inner: any UpstreamProtocol
    let recorder: HandshakeRecorder

    package func configure(_ channel: any Channel) throws {
        let sync = channel.pipeline.syncOperations
        try sync.addHandler(NIOSSLClientHandler(context: source.context, serverHostname: serverName))
        try sync.addHandler(ClientHandshakeWaiter(promise: channel.eventLoop.makePromise(), serverName: serverName, recorder: recorder))
        try inner.configure(channel)
    }

    package func ready(_ channel: any Channel) -> EventLoopFuture<Void> {
        guard let waiter = try? channel.pipeline.syncOperations.handler(type: ClientHandshakeWaiter.self) else {
            return channel.eventLoop.makeFailedFuture(ChannelError.ioOnClosedChannel)
        }
        return waiter.promise.futureResult
    }

    package func connection(of channel: any Channel) -> (any PoolableConnection)? {
        inner.connection(of: channel)
    }
}

/// The error an endpoint's failed handshake becomes: what a person reads in `l5d-err`.
package struct UpstreamHandshakeError: Error, CustomStringConvertible {
    package var kind: TLSFailureKind
    package var serverName: String?
    package var underlying: String

    package var description: String {
        let name = serverName.map { " (expected \($0))" } ?? ""
        return "TLS handshake failed: \(kind.explanation)\(kind == .nameMismatch ? name : ""): \(underlying)"
    }
}

/// Completes its promise when the endpoint's handshake does, and keeps handshake errors from
/// the protocol handler behind it (the pool reports them as a failed connection instead).
final class ClientHandshakeWaiter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    let promise: EventLoopPromise<Void>
    private let serverName: String?
    private let recorder: HandshakeRecorder
    private var done = false

    init(promise: EventLoopPromise<Void>, serverName: String?, recorder: HandshakeRecorder) {
        self.promise = promise
        self.serverName = serverName
        self.recorder = recorder
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event, !done {
            // The library accepts a certificate whose IP address is the one dialled, whatever
            // the name: the name is checked here too, against the DNS names (or the CN).
            if let serverName {
                let certificate = (try? context.pipeline.syncOperations.handler(type: NIOSSLClientHandler.self))?.peerCertificate
                let summary = certificate.map(CertificateSummary.init)
                guard let summary, CertificateNames.cover(serverName, dnsNames: summary.dnsNames, commonName: summary.subjectCommonName) else {
                    fail(context: context, NIOSSLExtraError.failedToValidateHostname)
                    return
                }
            }
            done = true
            recorder.succeeded()
            promise.succeed()
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard !done else {
            context.fireErrorCaught(error)
            return
        }
        fail(context: context, error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !done { fail(context: context, NIOSSLError.uncleanShutdown) }
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        if !done {
            done = true
            promise.fail(ChannelError.ioOnClosedChannel)
        }
    }

    private func fail(context: ChannelHandlerContext, _ error: any Error) {
        done = true
        let peer = context.channel.remoteAddress.map { AddressText.describe($0) } ?? "?"
        let certificate = (try? context.pipeline.syncOperations.handler(type: NIOSSLClientHandler.self))?.peerCertificate
        let kind = recorder.failed(error, peer: peer, peerCertificate: certificate)
        promise.fail(UpstreamHandshakeError(kind: kind, serverName: serverName, underlying: TLSErrorText.describe(error)))
        context.close(promise: nil)
    }
}

// MARK: choosing

/// Plain or TLS per client, from its `tls` parameters: one context source per configured `tls`
/// block (made at start-up, so that a bad file is a config error), and the client's expanded
/// `commonName` as the name to check.
package final class TLSUpstreamFactory: UpstreamFactory, Sendable {
    let plain: any UpstreamProtocol & UpstreamFactory
    /// By the block's settings without its commonName.
    let sources: [ClientTLSConfig: TLSContextSource]
    let recorders: [String: HandshakeRecorder]

    package init(plain: any UpstreamProtocol & UpstreamFactory, sources: [TLSContextSource], metrics: TLSMetrics, logger: Logger) {
        self.plain = plain
        var byConfig: [ClientTLSConfig: TLSContextSource] = [:]
        var recorders: [String: HandshakeRecorder] = [:]
        for source in sources {
            guard case .client(let router, let config) = source.role else { continue }
            byConfig[Self.key(config)] = source
            if recorders[router] == nil { recorders[router] = HandshakeRecorder(router: router, side: "client", metrics: metrics, logger: logger) }
        }
        self.sources = byConfig
        self.recorders = recorders
    }

    static func key(_ config: ClientTLSConfig) -> ClientTLSConfig {
        var key = config
        key.commonName = nil
        return key
    }

    package func upstream(for client: Path, params: ClientParams) -> any UpstreamProtocol {
        guard let tls = params.tls, let source = sources[Self.key(tls)], case .client(let router, _) = source.role, let recorder = recorders[router] else {
            return plain.upstream(for: client, params: params)
        }
        let name = tls.disableValidation ? nil : tls.commonName
        return TLSUpstream(source: source, serverName: name, inner: plain.upstream(for: client, params: params), recorder: recorder)
    }
}
