// Namers for delegation tests, without I/O: `/#/test/<name>` binds the names it is given,
// `/$/inet/HOST/PORT` binds literally, `/$/fail` fails and `/$/nil` is empty — Finagle's
// system namers, as pure functions.

import MeshCore

/// A bound name in tests: its id and residual as text.
public struct StubBound: Hashable, Sendable, CustomStringConvertible {
    public var id: String
    public var residual: String

    public init(id: String, residual: String = "/") {
        self.id = id
        self.residual = residual
    }

    public var description: String { residual == "/" ? id : "\(id)\(residual)" }
}

public struct StubNamers: Sendable {
    /// Names that `/#/test/<name>` binds.
    public var existing: Set<String>

    public init(existing: Set<String> = []) {
        self.existing = existing
    }

    public func lookup(_ path: Path) throws(DelegationError) -> NameTree<NamerResult<StubBound>> {
        let segments = path.segments
        guard let first = segments.first else { return .neg }
        if first == "#", segments.count >= 3, segments[1] == "test" {
            guard existing.contains(segments[2]) else { return .neg }
            return .leaf(.bound(StubBound(id: Path(segments: Array(segments[0...2])).description, residual: path.dropFirst(3).description)))
        }
        guard first == "$", segments.count >= 2 else { return .neg }
        switch segments[1] {
        case "inet":
            guard segments.count >= 4, Int(segments[3]) != nil else {
                throw .namerFailed(path: path, reason: "expected /$/inet/HOST/PORT")
            }
            return .leaf(.bound(StubBound(id: Path(segments: Array(segments[0...3])).description, residual: path.dropFirst(4).description)))
        case "fail": return .fail
        case "nil": return .empty
        default: throw .namerFailed(path: path, reason: "unknown system namer")
        }
    }

    public func delegator(_ dtab: String, maxDepth: Int = 100) throws -> Delegator<StubBound> {
        let parsed = try Dtab.read(dtab)
        let namers = self
        return Delegator(dtab: parsed, maxDepth: maxDepth) { path throws(DelegationError) in try namers.lookup(path) }
    }
}
