// Linkerd's rewriting system namers, reached as `/$/<name>/…` in dtabs. Each turns a path into
// another path, which is then delegated again through the dtab, or answers "no such name"
// (`neg`). Pure functions of the path; addresses are never looked up here.
//
//   io.buoyant.hostportPfx        /PFX/HOST:PORT/rest   → /PFX/HOST/PORT/rest
//   io.buoyant.porthostPfx        /PFX/HOST:PORT/rest   → /PFX/PORT/HOST/rest
//   io.buoyant.http.domainToPathPfx  /PFX/a.b.c/rest    → /PFX/c/b/a/rest
//   io.buoyant.http.subdomainOfPfx   /DOMAIN/PFX/sub.DOMAIN[:port]/rest → /PFX/sub/rest

public enum RewritingNamers {
    /// The names this module implements, as written after `/$/`.
    public static let names: Set<String> = [
        "io.buoyant.hostportPfx", "io.buoyant.porthostPfx",
        "io.buoyant.http.domainToPathPfx", "io.buoyant.http.subdomainOfPfx",
    ]

    /// The rewritten path for `/$/<name>/<rest>`, `.neg` when the path does not fit, or nil when
    /// `name` is not a rewriting namer.
    public static func lookup(_ name: String, _ rest: Path) -> NameTree<Path>? {
        switch name {
        case "io.buoyant.hostportPfx": return hostPort(rest, portFirst: false)
        case "io.buoyant.porthostPfx": return hostPort(rest, portFirst: true)
        case "io.buoyant.http.domainToPathPfx": return domainToPath(rest)
        case "io.buoyant.http.subdomainOfPfx": return subdomainOf(rest)
        default: return nil
        }
    }

    private static func hostPort(_ path: Path, portFirst: Bool) -> NameTree<Path> {
        guard path.count >= 2 else { return .neg }
        let parts = path.segments[1].split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, isPortLabel(parts[1]) else { return .neg }
        let host = String(parts[0])
        let port = String(parts[1])
        let middle = portFirst ? [port, host] : [host, port]
        return .leaf(Path(segments: [path.segments[0]] + middle + Array(path.segments.dropFirst(2))))
    }

    /// A port as Linkerd accepts it: a number or a DNS-label-like name (`http`), lower case.
    private static func isPortLabel(_ text: Substring) -> Bool {
        guard !text.isEmpty, text.utf8.count <= 63 else { return false }
        let bytes = Array(text.utf8)
        func alnum(_ byte: UInt8) -> Bool { (byte >= 0x30 && byte <= 0x39) || (byte >= 0x61 && byte <= 0x7A) }
        return alnum(bytes[0]) && bytes.allSatisfy { alnum($0) || $0 == UInt8(ascii: "-") }
    }

    private static func isHost(_ text: String) -> Bool {
        !text.isEmpty && text.utf8.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                || byte == UInt8(ascii: ".") || byte == UInt8(ascii: ":") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-")
        }
    }

    private static func domainToPath(_ path: Path) -> NameTree<Path> {
        guard path.count >= 2, isHost(path.segments[1]) else { return .neg }
        let labels = path.segments[1].split(separator: ".", omittingEmptySubsequences: false)
        guard labels.allSatisfy({ !$0.isEmpty }) else { return .neg }
        return .leaf(Path(segments: [path.segments[0]] + labels.reversed().map(String.init) + Array(path.segments.dropFirst(2))))
    }

    private static func subdomainOf(_ path: Path) -> NameTree<Path> {
        guard path.count >= 3 else { return .neg }
        let domain = path.segments[0]
        let prefix = path.segments[1]
        var host = path.segments[2]
        guard isHost(domain), isHost(host) else { return .neg }
        if let colon = host.firstIndex(of: ":"), colon != host.startIndex { host = String(host[..<colon]) }
        let suffix = "." + domain
        guard host.hasSuffix(suffix), host.count > suffix.count else { return .neg }
        let sub = String(host.dropLast(suffix.count))
        return .leaf(Path(segments: [prefix, sub] + Array(path.segments.dropFirst(3))))
    }
}
