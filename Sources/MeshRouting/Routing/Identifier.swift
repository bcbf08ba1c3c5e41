// Identifiers name a request: they turn it into a logical path under the router's `dstPrefix`.
// A router tries its identifiers in order and uses the first name it gets.

import MeshConfig
import MeshCore
import NIOHTTP1

struct Identification {
    /// The logical name, e.g. `/svc/users`.
    var name: Path
    /// The URI to forward when the identifier consumed part of it (`io.l5d.path` with `consume`).
    var uri: String?
}

struct Identifier: Sendable {
    let kinds: [IdentifierConfig]
    let dstPrefix: Path

    /// What alone decides the name of a request, as a string that can key the fast route cache:
    /// the header's value for a lone `io.l5d.header.token`, nothing at all for a lone
    /// `io.l5d.static`; nil for other identifiers (the request is named the long way).
    func fastKey(_ head: HTTPRequestHead) -> String? {
        guard kinds.count == 1 else { return nil }
        switch kinds[0] {
        case .headerToken(let header): return head.headers.first(name: header)
        case .staticPath: return ""
        default: return nil
        }
    }

    /// The first identification any identifier makes, or why none could.
    /// - Parameter uri: the request target in origin form (`/path?query`).
    func identify(_ head: HTTPRequestHead, uri: String) -> Result<Identification, ProxyError> {
        var reasons: [String] = []
        for kind in kinds {
            switch identify(kind, head, uri: uri) {
            case .success(let identification): return .success(identification)
            case .failure(let reason): reasons.append(reason.message)
            }
        }
        return .failure(ProxyError(.unidentified, reasons.joined(separator: "; ")))
    }

    private func identify(_ kind: IdentifierConfig, _ head: HTTPRequestHead, uri: String) -> Result<Identification, ProxyError> {
        switch kind {
        case .headerToken(let header):
            guard let value = head.headers.first(name: header), !value.isEmpty else {
                return .failure(ProxyError(.unidentified, "no \(header) header to route by"))
            }
            return .success(Identification(name: dstPrefix.appending(value)))
        case .headerPath(let header):
            guard let value = head.headers.first(name: header), !value.isEmpty else {
                return .failure(ProxyError(.unidentified, "no \(header) header to route by"))
            }
            do {
                return .success(Identification(name: dstPrefix + (try Path.read(value))))
            } catch {
                return .failure(ProxyError(.unidentified, "\(header) header is not a path: \(error.message)"))
            }
        case .methodAndHost(let httpUriInDst):
            let version = "\(head.version.major).\(head.version.minor)"
            var name = dstPrefix.appending(version).appending(head.method.rawValue)
            if head.version.minor >= 1 || head.version.major > 1 {
                guard let host = head.headers.first(name: "host"), !host.isEmpty else {
                    return .failure(ProxyError(.unidentified, "no Host header to route by"))
                }
                name = name.appending(host.lowercased())
            }
            if httpUriInDst { name = name + Identifier.pathSegments(of: uri) }
            return .success(Identification(name: name))
        case .path(let count, let consume):
            let segments = Identifier.pathSegments(of: uri)
            guard segments.count >= count else {
                return .failure(ProxyError(.unidentified, "the request path has fewer than \(count) segments to route by"))
            }
            var identification = Identification(name: dstPrefix + segments.take(count))
            if consume { identification.uri = Identifier.dropSegments(count, from: uri) }
            return .success(identification)
        case .staticPath(let path):
            return .success(Identification(name: dstPrefix + path))
        }
    }

    /// The non-empty segments of a URI's path, without its query.
    static func pathSegments(of uri: String) -> Path {
        let pathPart = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        return Path(segments: pathPart.split(separator: "/").map(String.init))
    }

    /// `uri` without its first `count` path segments (`/a/b/c?q` minus 1 → `/b/c?q`).
    static func dropSegments(_ count: Int, from uri: String) -> String {
        let parts = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let segments = parts[0].split(separator: "/", omittingEmptySubsequences: true)
        var rest = "/" + segments.dropFirst(count).joined(separator: "/")
        if parts[0].hasSuffix("/") && segments.count > count { rest += "/" }
        if parts.count > 1 { rest += "?" + parts[1] }
        return rest
    }
}
