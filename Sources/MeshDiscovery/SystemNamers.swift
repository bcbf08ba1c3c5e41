// The `/$/…` namers every dtab can use without configuration: `/$/inet/HOST/PORT` binds a
// fixed address, `/$/fail` fails, `/$/nil` is the empty set.

import Dispatch
import MeshCore
import NIOConcurrencyHelpers
import Synchronization

public final class InetNamer: Sendable {
    /// One endpoint set per name while something uses it (WeakValueCache.swift).
    let cache = WeakValueCache<Path, Watchable<Addr>>()
    /// Host names resolve here, a few at a time (ResolverQueue.swift).
    let resolver = ResolverQueue()

    public init() {}

    /// Binds `/$/inet/HOST/PORT[/residual]` (given the segments after `inet`).
    /// Host names resolve in the background; their address is pending until then.
    func lookup(_ rest: Path) throws(DelegationError) -> NameTree<NamerResult<BoundName>> {
        let segments = rest.segments
        var host = ""
        var portIndex = 1
        if segments.count >= 2, Int(segments[1]) != nil {
            host = segments[0]
        } else if segments.count >= 1, Int(segments[0]) != nil {
            // `/$/inet/PORT`: the local host.
            host = "127.0.0.1"
            portIndex = 0
        } else {
            throw .namerFailed(path: Path(segments: ["$", "inet"]) + rest, reason: "expected /$/inet/HOST/PORT")
        }
        guard let port = Int(segments[portIndex]), (1...65535).contains(port) else {
            throw .namerFailed(path: Path(segments: ["$", "inet"]) + rest, reason: "port must be 1 to 65535")
        }
        let id = Path(segments: ["$", "inet"] + segments[0...portIndex])
        return .leaf(.bound(BoundName(id: id, residual: rest.dropFirst(portIndex + 1), addr: addr(id: id, host: host, port: port))))
    }

    /// Binds `/$/io.buoyant.rinet/PORT/HOST[/residual]`: inet with the port first.
    func lookupReversed(_ rest: Path) -> NameTree<NamerResult<BoundName>> {
        guard rest.count >= 2, let port = Int(rest.segments[0]), (1...65535).contains(port) else { return .neg }
        let host = rest.segments[1]
        let id = Path(segments: ["$", "io.buoyant.rinet", rest.segments[0], host])
        return .leaf(.bound(BoundName(id: id, residual: rest.dropFirst(2), addr: addr(id: id, host: host, port: port))))
    }

    private func addr(id: Path, host: String, port: Int) -> Watchable<Addr> {
        cache.value(for: id) {
            let watchable: Watchable<Addr>
            if let ip = HostResolver.numericAddress(host) {
                watchable = Watchable(.bound([Endpoint(host: ip, port: port)]))
            } else {
                watchable = Watchable(.pending)
                if !resolver.resolve(host, port: port, into: watchable) {
                    watchable.set(.failed("too many host names are being resolved at once (\(resolver.capacity) waiting)"))
                    resolver.retryLater(host, port: port, into: watchable)
                }
            }
            return watchable
        }
    }
}

/// Every namer a router can reach: the configured ones under `/#/<prefix>`, and the system ones
/// under `/$`.
public final class NamerSet: Sendable {
    public let configured: [any Namer]
    let inet = InetNamer()
    private let epoch = Epoch()
    private let observations: [Observation]

    public init(configured: [any Namer]) {
        self.configured = configured
        let epoch = self.epoch
        self.observations = configured.map { namer in
            namer.generation.observe { _ in epoch.bump() }
        }
    }

    /// Changes whenever any namer's answers may have changed. One atomic load.
    public var generation: UInt64 { epoch.value }

    /// `/$/inet` endpoint sets alive now, and kept in the map (for tests and the admin port).
    public var inetCacheCounts: (live: Int, stored: Int) { (inet.cache.liveCount, inet.cache.storedCount) }

    /// Binds a path that no dentry matched, for `Delegator`.
    public func lookup(_ path: Path) throws(DelegationError) -> NameTree<NamerResult<BoundName>> {
        guard let first = path.segments.first else { return .neg }
        switch first {
        case "#":
            let rest = path.dropFirst(1)
            for namer in configured where rest.starts(with: namer.prefix) {
                let answer = namer.lookup(rest.dropFirst(namer.prefix.count))
                if case .neg = answer { continue }
                return answer.map { .bound($0) }
            }
            return .neg
        case "$":
            guard path.count >= 2 else { return .neg }
            switch path.segments[1] {
            case "inet", "fixedinet": return try inet.lookup(path.dropFirst(2))
            case "fail": return .fail
            case "nil": return .empty
            case "io.buoyant.rinet": return inet.lookupReversed(path.dropFirst(2))
            default:
                if let rewritten = RewritingNamers.lookup(path.segments[1], path.dropFirst(2)) {
                    return rewritten.map { .path($0) }
                }
                throw .namerFailed(path: path, reason: "unknown system namer '/$/\(path.segments[1])'")
            }
        default:
            return .neg
        }
    }
}

/// A counter that only goes up, read without a lock.
public final class Epoch: Sendable {
    private let counter = Atomic<UInt64>(0)

    public init() {}

    public var value: UInt64 { counter.load(ordering: .acquiring) }

    public func bump() {
        counter.add(1, ordering: .releasing)
    }
}
