// Delegation: rewriting a logical name through a dtab until namers bind it to concrete names
// (Finagle's `Namer.bind` with Linkerd's configured-namers interpreter).
//
// Each step looks the path up in the dtab; only when no dentry applies (the lookup is exactly
// `neg`) are the namers asked. Leaves that are still paths are looked up again, up to `maxDepth`
// steps along one chain. Alternation is tried in order and falls through `neg` only: it stops at
// `fail` and at anything that resolved, even `empty`. A union keeps the branches that resolved and
// drops those that are `neg` or `fail`; it is `neg` when none resolved.
//
// A dtab can come from a request (`l5d-dtab`), so delegation is bounded in total work as well as
// in depth: a chain of alternations (`/a=>/b|/b;/b=>/c|/c;…`) doubles the paths to look up at
// every step, and about 1 KB of it kept an event loop busy forever before `maxLookups` existed.

/// A leaf of a namer's answer: a concrete bound name, or a path to delegate further (rewriting
/// namers such as `/$/io.buoyant.hostportPfx`).
public enum NamerResult<Bound> {
    case bound(Bound)
    case path(Path)
}

extension NamerResult: Sendable where Bound: Sendable {}

/// Why a name could not be delegated at all.
public enum DelegationError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The chain of rewrites was longer than the limit: usually a dtab loop.
    case maxDepthExceeded(path: Path, maxDepth: Int)
    /// A namer failed outright for this path.
    case namerFailed(path: Path, reason: String)
    /// Binding needed more than `maxLookups` dtab and namer lookups in all.
    case workBudgetExceeded(path: Path, maxLookups: Int)

    public var description: String {
        switch self {
        case .maxDepthExceeded(let path, let maxDepth):
            return "delegation of \(path) exceeded \(maxDepth) rewrites (is there a dtab loop?)"
        case .namerFailed(let path, let reason):
            return "namer failed for \(path): \(reason)"
        case .workBudgetExceeded(let path, let maxLookups):
            return "delegation of \(path) needed more than \(maxLookups) lookups (a dtab whose alternations multiply?)"
        }
    }
}

/// Binds paths through a dtab and a set of namers.
public struct Delegator<Bound> {
    public typealias Namers = (Path) throws(DelegationError) -> NameTree<NamerResult<Bound>>

    public let dtab: Dtab
    public let maxDepth: Int
    /// Lookups (dtab steps and namer calls) one `bind` or `delegate` may make in all.
    public let maxLookups: Int
    let namers: Namers

    func namerLookup(_ path: Path) throws(DelegationError) -> NameTree<NamerResult<Bound>> {
        try namers(path)
    }

    /// - Parameters:
    ///   - maxDepth: rewrites along one chain (Finagle's 100).
    ///   - maxLookups: lookups in all, over every branch.
    ///   - namers: binds a path no dentry matched (`/#/…`, `/$/…`); `.neg` when no namer does.
    public init(dtab: Dtab, maxDepth: Int = 100, maxLookups: Int = Delegator.defaultMaxLookups, namers: @escaping Namers) {
        self.dtab = dtab
        self.maxDepth = maxDepth
        self.maxLookups = maxLookups
        self.namers = namers
    }

    /// Generous for real dtabs (a handful of lookups a name), small enough that the worst
    /// request costs about a millisecond.
    public static var defaultMaxLookups: Int { 1000 }

    /// The bound tree for `path`: simplified, without alternations.
    public func bind(_ path: Path) throws(DelegationError) -> NameTree<Bound> {
        var lookups = 0
        return try bind(.leaf(.path(path)), depth: 0, lookups: &lookups)
    }

    /// One step: the dtab's rewrite, or the namers' answer when no dentry applies.
    public func lookup(_ path: Path) throws(DelegationError) -> NameTree<NamerResult<Bound>> {
        let rewritten = dtab.lookup(path)
        if case .neg = rewritten {
            return try namers(path)
        }
        return rewritten.map { .path($0) }
    }

    private func bind(_ tree: NameTree<NamerResult<Bound>>, depth: Int, lookups: inout Int) throws(DelegationError) -> NameTree<Bound> {
        switch tree {
        case .leaf(.bound(let bound)):
            return .leaf(bound)
        case .leaf(.path(let path)):
            // Finagle counts the trees produced, failing once a chain has needed more than maxDepth lookups.
            guard depth < maxDepth else { throw .maxDepthExceeded(path: path, maxDepth: maxDepth) }
            lookups += 1
            guard lookups <= maxLookups else { throw .workBudgetExceeded(path: path, maxLookups: maxLookups) }
            return try bind(lookup(path), depth: depth + 1, lookups: &lookups)
        case .neg: return .neg
        case .fail: return .fail
        case .empty: return .empty
        case .alt(let branches):
            for branch in branches {
                let bound = try bind(branch, depth: depth, lookups: &lookups)
                if case .neg = bound { continue }
                return bound
            }
            return .neg
        case .union(let weighted):
            var kept: [NameTree<Bound>.Weighted] = []
            for item in weighted {
                let bound = try bind(item.tree, depth: depth, lookups: &lookups)
                switch bound {
                case .neg, .fail: continue
                default: kept.append(.init(weight: item.weight, tree: bound))
                }
            }
            switch kept.count {
            case 0: return .neg
            case 1: return kept[0].tree
            default: return .union(kept)
            }
        }
    }
}
