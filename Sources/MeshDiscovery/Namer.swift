// Namers bind the concrete names that dtabs delegate to (`/#/<prefix>/…` for configured namers,
// `/$/…` for system namers) to live endpoint sets.

import MeshCore

/// A name bound to a live endpoint set.
public struct BoundName: Sendable, Hashable, CustomStringConvertible {
    /// The bound name's identity, e.g. `/#/io.l5d.fs/users`; one client is kept per id.
    public let id: Path
    /// The part of the delegated path that the namer did not consume (`l5d-dst-residual`).
    public let residual: Path
    /// The endpoints, updated live by discovery.
    public let addr: Watchable<Addr>

    public init(id: Path, residual: Path, addr: Watchable<Addr>) {
        self.id = id
        self.residual = residual
        self.addr = addr
    }

    public static func == (lhs: BoundName, rhs: BoundName) -> Bool {
        lhs.id == rhs.id && lhs.residual == rhs.residual
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(id)
        hasher.combine(residual)
    }

    public var description: String { residual.isEmpty ? id.description : "\(id)\(residual)" }
}

/// A discovery backend, reached through `/#/<prefix>/…` in dtabs.
public protocol Namer: Sendable {
    /// The config kind, e.g. `io.l5d.fs`.
    var kind: String { get }
    /// The prefix under `/#`, e.g. `/io.l5d.fs`.
    var prefix: Path { get }
    /// Binds the path that follows the prefix. `.neg` when there is no such name. Never blocks:
    /// namers answer from what they have already discovered.
    func lookup(_ path: Path) -> NameTree<BoundName>
    /// Bumped whenever a later `lookup` may answer differently (a name appeared or vanished), so
    /// that cached delegations can be dropped.
    var generation: Watchable<UInt64> { get }
    /// A snapshot for the admin port (`/namer_state/<kind>.json`).
    func state() -> NamerState
}

/// What a namer currently knows, for the admin port.
public struct NamerState: Sendable {
    public var kind: String
    public var prefix: Path
    public var names: [String: Addr]
    public var problems: [String: [String]]

    public init(kind: String, prefix: Path, names: [String: Addr], problems: [String: [String]] = [:]) {
        self.kind = kind
        self.prefix = prefix
        self.names = names
        self.problems = problems
    }
}
