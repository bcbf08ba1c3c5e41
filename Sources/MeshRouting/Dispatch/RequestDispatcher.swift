// Validate → identify → route, for a request head from any protocol driver: the decision of
// what becomes of a request before anything is sent anywhere. The driver gets either a routed
// request (everything its exchange needs, the router and listener settings captured now, so
// that a request in flight never re-reads them) or an answer to give (and whether the client's
// byte stream can still be trusted after it).

import MeshCore
import NIOCore
import NIOHTTP1

/// A request ready for its exchange.
package struct RoutedRequest {
    let router: Router
    /// The request as the client sent it.
    let clientHead: HTTPRequestHead
    /// The request as it goes upstream (hop-by-hop headers gone, `l5d-*` context added).
    let upstreamHead: HTTPRequestHead
    let framing: HeaderRules.RequestFraming
    /// The client sent `Expect: 100-continue`.
    let expectsContinue: Bool
    let route: FastRoute
    /// The request's own dtab (`l5d-dtab`, `l5d-ctx-dtab`).
    let localDtab: Dtab
    let callerDeadline: Deadline?
    /// Uptime nanoseconds at the head's arrival.
    let start: UInt64
    /// The listener's `timeoutMs`.
    let listenerTimeoutMs: Int?
    /// The listener's `clearContext`: `l5d-*` headers are stripped from responses too.
    package let clearContext: Bool
    /// The client's connection ends with this response (an Upgrade the proxy does not follow).
    package let closeAfter: Bool
}

/// What becomes of a request head.
package enum Dispatch {
    case routed(RoutedRequest)
    /// meshd answers itself. `closeConnection`: nothing after this request can be trusted (the
    /// head could not frame what follows, or the method has no framed response). `holdsSlot`:
    /// the request took one of the listener's `maxConcurrentRequests` slots, to give back.
    case rejected(ProxyError, closeConnection: Bool, holdsSlot: Bool)
}

package struct RequestDispatcher {
    let listener: ListenerContext

    package init(listener: ListenerContext) {
        self.listener = listener
    }

    /// Decides the fate of one request head (counted as a request of the router).
    /// `peer`: the client's certificate identity on a TLS listener.
    package func dispatch(_ head: HTTPRequestHead, start: UInt64, random: inout SplitMix64, peer: PeerIdentity? = nil) -> Dispatch {
        let router = listener.router
        router.metrics.requests.increment()
        guard listener.tryStartRequest() else {
            let error = ProxyError(.tooManyRequests, "listener \(listener.config.address) is serving its maxConcurrentRequests (\(listener.config.maxConcurrentRequests ?? 0))", retryable: true)
            return .rejected(error, closeConnection: false, holdsSlot: false)
        }
        let framing: HeaderRules.RequestFraming
        var facts: HeaderFacts
        switch RequestValidator.validate(head, limits: listener.limits) {
        case .failure(let error):
            // The head cannot be trusted to frame what follows: answer and close.
            return .rejected(error, closeConnection: true, holdsSlot: true)
        case .success(let validated):
            (framing, facts) = validated
        }
        if facts.contains(.expect), let error = RequestValidator.unmetExpectation(head) {
            return .rejected(error, closeConnection: false, holdsSlot: true)
        }
        if head.method == .CONNECT {
            // A response to CONNECT has no framed body (NIO's encoder drops it): end it by closing.
            return .rejected(ProxyError(.unsupportedMethod, "CONNECT is not supported; send plain HTTP requests (http_proxy) to meshd"), closeConnection: true, holdsSlot: true)
        }
        // Protocol upgrades (WebSocket) are not proxied yet: the request goes on as plain HTTP
        // without its Upgrade header, and since the decoder stops reading HTTP after an upgrade
        // request, the connection ends with the response.
        let closeAfter = facts.contains(.upgrade)
        var routedHead = head
        var target = head.uri
        if let absolute = MessageRewriting.absoluteForm(head.uri) {
            target = absolute.target
            routedHead.headers.replaceOrAdd(name: "host", value: absolute.authority)
        }
        if listener.config.clearContext, facts.contains(.l5d) {
            MessageRewriting.removeL5dHeaders(&routedHead.headers)
            facts.subtract([.l5d, .dtab, .deadline])
        }
        var localDtab = Dtab.empty
        if facts.contains(.dtab), listener.accessRules != nil {
            // A per-request dtab could send an allowed name anywhere: on a listener with
            // identity rules it is dropped (and not passed on).
            routedHead.headers.remove(name: "l5d-dtab")
            routedHead.headers.remove(name: "l5d-ctx-dtab")
            facts.subtract([.dtab])
        }
        if facts.contains(.dtab) {
            switch MessageRewriting.localDtab(routedHead.headers) {
            case .failure(let error):
                return .rejected(error, closeConnection: closeAfter, holdsSlot: true)
            case .success(let dtab):
                localDtab = dtab
            }
        }
        let callerDeadline: Deadline?
        switch facts.contains(.deadline) ? Deadline.read(routedHead.headers[canonicalForm: "l5d-ctx-deadline"].map(String.init)) : .success(nil) {
        case .failure(let error):
            return .rejected(ProxyError(.badRequest, error.description), closeConnection: closeAfter, holdsSlot: true)
        case .success(let deadline):
            callerDeadline = deadline
            if let overdue = deadline?.overdue(now: WallClock.nanoseconds()) {
                // Past its deadline already: refused without contacting anyone.
                return .rejected(ProxyError(.deadlineExceeded, "the request's l5d-ctx-deadline passed \(overdue / 1_000_000) ms ago"), closeConnection: closeAfter, holdsSlot: true)
            }
        }
        if facts.contains(.deadline) { routedHead.headers.remove(name: "l5d-ctx-deadline") }

        let route: FastRoute
        // The fast path: a name seen before, with nothing it depends on changed since.
        let token = localDtab.isEmpty ? router.identifier.fastKey(routedHead) : nil
        if let token, let cached = router.fastRoute(token) {
            route = cached
            if let rules = listener.accessRules, !rules.allows(peer, name: route.name) {
                return .rejected(denied(peer, route.name), closeConnection: closeAfter, holdsSlot: true)
            }
        } else {
            let identification: Identification
            switch router.identifier.identify(routedHead, uri: target) {
            case .failure(let error):
                return .rejected(error, closeConnection: closeAfter, holdsSlot: true)
            case .success(let identified):
                identification = identified
            }
            // Refused before any routing work is done for it.
            if let rules = listener.accessRules, !rules.allows(peer, name: identification.name) {
                return .rejected(denied(peer, identification.name), closeConnection: closeAfter, holdsSlot: true)
            }
            switch router.route(identification.name, local: localDtab, random: &random) {
            case .failure(let error):
                return .rejected(error, closeConnection: closeAfter, holdsSlot: true)
            case .success(let (bound, client, epoch)):
                route = router.makeFastRoute(name: identification.name, bound: bound, client: client, epoch: epoch ?? 0)
                if let token, epoch != nil, identification.uri == nil { router.remember(route, for: token) }
                target = identification.uri ?? target
            }
        }
        var upstreamHead = MessageRewriting.upstreamRequest(
            from: routedHead, target: target, framing: framing, facts: facts, route: route, localDtab: localDtab,
            requestID: MessageRewriting.requestID(&random)
        )
        if route.client.params.forwardClientCert || listener.transport != nil {
            // Only meshd says who a TLS client is: whatever a client sent under this name goes
            // (on TLS listeners always; on plain ones when meshd forwards the certificate).
            upstreamHead.headers.remove(name: ForwardedClientCert.header)
            if route.client.params.forwardClientCert, let peer {
                upstreamHead.headers.add(name: ForwardedClientCert.header, value: ForwardedClientCert.value(peer, by: listener.transport?.ownIdentity))
            }
        }
        route.client.touch(now: start)
        return .routed(RoutedRequest(
            router: router, clientHead: head, upstreamHead: upstreamHead, framing: framing, expectsContinue: facts.contains(.expect), route: route,
            localDtab: localDtab, callerDeadline: callerDeadline, start: start, listenerTimeoutMs: listener.config.timeoutMs,
            clearContext: listener.config.clearContext, closeAfter: closeAfter
        ))
    }

    /// A caller the listener's `tls.allow` rules do not let call `name`: counted by identity.
    private func denied(_ peer: PeerIdentity?, _ name: Path) -> ProxyError {
        let who = peer?.primary ?? "a client without a certificate"
        listener.router.meshMetrics.tls.accessDenied(router: listener.router.label, identity: peer?.primary ?? "none").increment()
        return ProxyError(.forbidden, "\(who) may not call \(name) on \(listener.config.address) (tls.allow)")
    }
}

/// `x-forwarded-client-cert`, in Envoy's format: `By=<meshd's URI>;Hash=<SHA-256 of the client
/// certificate>;Subject="<subject>";URI=<URI SAN>;DNS=<DNS SAN>` (one URI= and DNS= per SAN).
package enum ForwardedClientCert {
    package static let header = "x-forwarded-client-cert"
    /// URI and DNS names forwarded per certificate, each.
    package static let maxNames = 16

    package static func value(_ peer: PeerIdentity, by: String?) -> String {
        var parts: [String] = []
        if let by { parts.append("By=" + by) }
        parts.append("Hash=" + peer.certificateHash)
        parts.append("Subject=\"" + quoted(peer.subject) + "\"")
        // At most `maxNames` of each: a certificate with hundreds of SANs must not make a header
        // the app refuses.
        for uri in peer.uris.prefix(maxNames) { parts.append("URI=" + field(uri)) }
        for dns in peer.dnsNames.prefix(maxNames) { parts.append("DNS=" + field(dns)) }
        return parts.joined(separator: ";")
    }

    /// A SAN as a field value: as it is when plain, quoted when it holds a character that
    /// separates fields or elements (`;` `,` `=` `"` or a space), so that a certificate's
    /// names — its issuer's words, not meshd's — cannot add fields or entries.
    private static func field(_ text: String) -> String {
        let special = text.unicodeScalars.contains { ";,=\" \\".unicodeScalars.contains($0) || $0.value < 0x20 || $0.value == 0x7F }
        return special ? "\"" + quoted(text) + "\"" : text
    }

    /// A quoted value with `"` and `\` escaped, and nothing a header cannot carry.
    private static func quoted(_ text: String) -> String {
        var out = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"", "\\": out += "\\" + String(scalar)
            case _ where scalar.value < 0x20 || scalar.value == 0x7F: out += " "
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}
