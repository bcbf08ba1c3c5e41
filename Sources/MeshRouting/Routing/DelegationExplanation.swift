// One-line answers to "why did this request not route?", read off the delegation tree, for the
// `l5d-err` header: which names led nowhere, which dentry produced them, and why.

import MeshCore
import MeshDiscovery

enum DelegationExplanation {
    struct Summary {
        var text: String
        /// Every dead end was an empty set (`$`, `/$/nil`): there is a name but no endpoints.
        var onlyEmpty: Bool
    }

    static func summary(_ tree: DelegateTree<BoundName>, limit: Int = 4) -> Summary {
        var outcomes: [String] = []
        var allEmpty = true
        collect(tree, into: &outcomes, allEmpty: &allEmpty)
        var text = outcomes.prefix(limit).joined(separator: "; ")
        if outcomes.count > limit { text += "; and \(outcomes.count - limit) more" }
        if outcomes.isEmpty { text = "the name delegates to nothing"; allEmpty = false }
        return Summary(text: text, onlyEmpty: allEmpty)
    }

    private static func collect(_ tree: DelegateTree<BoundName>, into outcomes: inout [String], allEmpty: inout Bool) {
        func via(_ dentry: Dentry?) -> String { dentry.map { " (dentry \($0))" } ?? "" }
        switch tree {
        case .delegate(_, _, let next):
            collect(next, into: &outcomes, allEmpty: &allEmpty)
        case .alt(_, _, let branches):
            for branch in branches { collect(branch, into: &outcomes, allEmpty: &allEmpty) }
        case .union(_, _, let branches):
            for branch in branches { collect(branch.tree, into: &outcomes, allEmpty: &allEmpty) }
        case .leaf:
            break
        case .neg(let path, let dentry, let explicit):
            allEmpty = false
            if explicit {
                outcomes.append("\(path) is marked negative (~)\(via(dentry))")
            } else if dentry == nil {
                outcomes.append("no dentry matches \(path) and no namer binds it")
            } else {
                outcomes.append("\(path) is not bound by any dentry or namer\(via(dentry))")
            }
        case .fail(let path, let dentry):
            allEmpty = false
            outcomes.append("\(path) fails (!)\(via(dentry))")
        case .empty(let path, let dentry):
            outcomes.append("\(path) is bound to an empty set ($)\(via(dentry))")
        case .exception(let path, let dentry, let message):
            allEmpty = false
            outcomes.append("\(path): \(message)\(via(dentry))")
        }
    }

    /// The dentry that produced the leaf bound to `id`, if the tree has one.
    static func dentry(leading id: Path, in tree: DelegateTree<BoundName>) -> Dentry? {
        switch tree {
        case .leaf(_, let dentry, let bound):
            return bound.id == id ? dentry : nil
        case .delegate(_, _, let next):
            return self.dentry(leading: id, in: next)
        case .alt(_, _, let branches):
            return branches.lazy.compactMap { self.dentry(leading: id, in: $0) }.first
        case .union(_, _, let branches):
            return branches.lazy.compactMap { self.dentry(leading: id, in: $0.tree) }.first
        case .neg, .fail, .empty, .exception:
            return nil
        }
    }
}
