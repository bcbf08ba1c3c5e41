// The explanation of a delegation: every step from a logical name to what bound it, with the
// dentry responsible for each step. Unlike `Delegator.bind`, which stops at the first branch of
// an alternation that binds, this explores every branch and records failures as `exception`
// nodes instead of failing as a whole — it is for people (the admin delegator, `meshd delegate`,
// `l5d-err`), not for routing requests.

/// One node of an explained delegation. `path` is the name at this step; `dentry` is the rule
/// that produced it (nil at the root).
public indirect enum DelegateTree<Bound> {
    case delegate(path: Path, dentry: Dentry?, next: DelegateTree<Bound>)
    case alt(path: Path, dentry: Dentry?, branches: [DelegateTree<Bound>])
    case union(path: Path, dentry: Dentry?, branches: [(weight: Double, tree: DelegateTree<Bound>)])
    case leaf(path: Path, dentry: Dentry?, bound: Bound)
    /// No dentry or namer binds `path` (or an explicit `~`, shown with `explicit`).
    case neg(path: Path, dentry: Dentry?, explicit: Bool)
    case fail(path: Path, dentry: Dentry?)
    case empty(path: Path, dentry: Dentry?)
    case exception(path: Path, dentry: Dentry?, message: String)

    public var path: Path {
        switch self {
        case .delegate(let path, _, _), .alt(let path, _, _), .union(let path, _, _), .leaf(let path, _, _),
            .neg(let path, _, _), .fail(let path, _), .empty(let path, _), .exception(let path, _, _):
            return path
        }
    }

    public var dentry: Dentry? {
        switch self {
        case .delegate(_, let dentry, _), .alt(_, let dentry, _), .union(_, let dentry, _), .leaf(_, let dentry, _),
            .neg(_, let dentry, _), .fail(_, let dentry), .empty(_, let dentry), .exception(_, let dentry, _):
            return dentry
        }
    }

    func retagged(_ dentry: Dentry?) -> DelegateTree<Bound> {
        switch self {
        case .delegate(let path, _, let next): return .delegate(path: path, dentry: dentry, next: next)
        case .alt(let path, _, let branches): return .alt(path: path, dentry: dentry, branches: branches)
        case .union(let path, _, let branches): return .union(path: path, dentry: dentry, branches: branches)
        case .leaf(let path, _, let bound): return .leaf(path: path, dentry: dentry, bound: bound)
        case .neg(let path, _, let explicit): return .neg(path: path, dentry: dentry, explicit: explicit)
        case .fail(let path, _): return .fail(path: path, dentry: dentry)
        case .empty(let path, _): return .empty(path: path, dentry: dentry)
        case .exception(let path, _, let message): return .exception(path: path, dentry: dentry, message: message)
        }
    }

    /// Linkerd's simplification: a step that only re-states its child collapses into it; a
    /// one-branch alternation or union becomes a plain step; nested alternations at the same
    /// path flatten.
    public var simplified: DelegateTree<Bound> {
        switch self {
        case .delegate(let path, let dentry, let next):
            let child = next.simplified
            switch child {
            case .neg, .fail, .empty: return .delegate(path: path, dentry: dentry, next: child)
            default:
                return child.path == path ? child.retagged(dentry) : .delegate(path: path, dentry: dentry, next: child)
            }
        case .alt(let path, let dentry, let branches):
            var flat: [DelegateTree<Bound>] = []
            for branch in branches.map(\.simplified) {
                if case .alt(let inner, _, let innerBranches) = branch, inner == path {
                    flat.append(contentsOf: innerBranches)
                } else {
                    flat.append(branch)
                }
            }
            switch flat.count {
            case 0: return .neg(path: path, dentry: dentry, explicit: false)
            case 1: return DelegateTree.delegate(path: path, dentry: dentry, next: flat[0]).simplified
            default: return .alt(path: path, dentry: dentry, branches: flat)
            }
        case .union(let path, let dentry, let branches):
            let simple = branches.map { ($0.weight, $0.tree.simplified) }
            switch simple.count {
            case 0: return .neg(path: path, dentry: dentry, explicit: false)
            case 1: return DelegateTree.delegate(path: path, dentry: dentry, next: simple[0].1).simplified
            default: return .union(path: path, dentry: dentry, branches: simple.map { (weight: $0.0, tree: $0.1) })
            }
        case .leaf, .neg, .fail, .empty, .exception:
            return self
        }
    }
}

extension DelegateTree: Sendable where Bound: Sendable {}

extension Delegator {
    /// Explains how `path` delegates: every branch, every dentry, every failure. Bounded by
    /// `maxLookups` as `bind` is: past it, what is left unexplored shows as an exception.
    public func delegate(_ path: Path) -> DelegateTree<Bound> {
        var lookups = 0
        return DelegateTree.delegate(path: path, dentry: nil, next: explain(path, producedBy: nil, depth: 0, lookups: &lookups)).simplified
    }

    private func explain(_ path: Path, producedBy dentry: Dentry?, depth: Int, lookups: inout Int) -> DelegateTree<Bound> {
        guard depth < maxDepth else {
            return .exception(path: path, dentry: dentry, message: "delegation exceeded \(maxDepth) rewrites (is there a dtab loop?)")
        }
        lookups += 1
        guard lookups <= maxLookups else {
            return .exception(path: path, dentry: dentry, message: DelegationError.workBudgetExceeded(path: path, maxLookups: maxLookups).description)
        }
        let matches = dtab.matches(path)
        // As in `lookup`: a lone `~` result is no answer at all, and the namers are asked; only
        // if they do not bind the path either is it shown as the dentry's `~`.
        if matches.count == 1, case .neg = matches[0].rewritten, let answer = try? namerLookup(path) {
            if case .neg = answer {} else { return explainTree(answer, at: path, dentry: dentry, depth: depth, lookups: &lookups) }
        }
        switch matches.count {
        case 0:
            let answer: NameTree<NamerResult<Bound>>
            do {
                answer = try namerLookup(path)
            } catch {
                return .exception(path: path, dentry: dentry, message: error.description)
            }
            if case .neg = answer { return .neg(path: path, dentry: dentry, explicit: false) }
            return explainTree(answer, at: path, dentry: dentry, depth: depth, lookups: &lookups)
        case 1:
            let tree = matches[0].rewritten.map { NamerResult<Bound>.path($0) }
            return .delegate(path: path, dentry: dentry, next: explainTree(tree, at: path, dentry: matches[0].dentry, depth: depth, lookups: &lookups))
        default:
            var branches: [DelegateTree<Bound>] = []
            for match in matches {
                branches.append(explainTree(match.rewritten.map { NamerResult<Bound>.path($0) }, at: path, dentry: match.dentry, depth: depth, lookups: &lookups))
            }
            return .alt(path: path, dentry: dentry, branches: branches)
        }
    }

    private func explainTree(_ tree: NameTree<NamerResult<Bound>>, at path: Path, dentry: Dentry?, depth: Int, lookups: inout Int) -> DelegateTree<Bound> {
        switch tree {
        case .leaf(.path(let next)):
            return explain(next, producedBy: dentry, depth: depth + 1, lookups: &lookups)
        case .leaf(.bound(let bound)):
            return .leaf(path: path, dentry: dentry, bound: bound)
        case .neg:
            return .neg(path: path, dentry: dentry, explicit: true)
        case .fail:
            return .fail(path: path, dentry: dentry)
        case .empty:
            return .empty(path: path, dentry: dentry)
        case .alt(let branches):
            var explained: [DelegateTree<Bound>] = []
            for branch in branches { explained.append(explainTree(branch, at: path, dentry: dentry, depth: depth, lookups: &lookups)) }
            return .alt(path: path, dentry: dentry, branches: explained)
        case .union(let weighted):
            var explained: [(weight: Double, tree: DelegateTree<Bound>)] = []
            for item in weighted { explained.append((item.weight, explainTree(item.tree, at: path, dentry: dentry, depth: depth, lookups: &lookups))) }
            return .union(path: path, dentry: dentry, branches: explained)
        }
    }
}
