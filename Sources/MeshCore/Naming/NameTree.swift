// A tree of names: what a dtab rewrites a path into, and what a namer binds a name to.
//
// Finagle's `NameTree`: leaves are names; `alt` tries its branches in order and takes the first
// that resolves; `union` splits traffic over its branches by weight; `neg` means "no such name"
// (alternation falls through it); `fail` means "resolution failed" (alternation stops on it);
// `empty` means "resolved to nothing".

/// A name tree over leaves of type `Value`.
public indirect enum NameTree<Value> {
    case leaf(Value)
    /// Alternation, `a | b`: the first branch that resolves.
    case alt([NameTree<Value>])
    /// Weighted union, `0.7 * a & 0.3 * b`: traffic shared by weight.
    case union([Weighted])
    /// `~`: uninhabited; alternation falls through it.
    case neg
    /// `!`: failed; alternation stops at it.
    case fail
    /// `$`: resolved to the empty set.
    case empty

    public struct Weighted {
        public var weight: Double
        public var tree: NameTree<Value>

        public init(weight: Double, tree: NameTree<Value>) {
            self.weight = weight
            self.tree = tree
        }

        public static var defaultWeight: Double { 1.0 }
    }

    /// Applies `transform` to every leaf.
    public func map<T>(_ transform: (Value) throws -> T) rethrows -> NameTree<T> {
        switch self {
        case .leaf(let value): return .leaf(try transform(value))
        case .alt(let trees): return .alt(try trees.map { try $0.map(transform) })
        case .union(let weighted):
            return .union(try weighted.map { .init(weight: $0.weight, tree: try $0.tree.map(transform)) })
        case .neg: return .neg
        case .fail: return .fail
        case .empty: return .empty
        }
    }

    /// Replaces every leaf by a tree.
    public func flatMap<T>(_ transform: (Value) throws -> NameTree<T>) rethrows -> NameTree<T> {
        switch self {
        case .leaf(let value): return try transform(value)
        case .alt(let trees): return .alt(try trees.map { try $0.flatMap(transform) })
        case .union(let weighted):
            return .union(try weighted.map { .init(weight: $0.weight, tree: try $0.tree.flatMap(transform) ) })
        case .neg: return .neg
        case .fail: return .fail
        case .empty: return .empty
        }
    }

    /// Every leaf, left to right.
    public var leaves: [Value] {
        var out: [Value] = []
        collectLeaves(into: &out)
        return out
    }

    private func collectLeaves(into out: inout [Value]) {
        switch self {
        case .leaf(let value): out.append(value)
        case .alt(let trees): for tree in trees { tree.collectLeaves(into: &out) }
        case .union(let weighted): for item in weighted { item.tree.collectLeaves(into: &out) }
        case .neg, .fail, .empty: break
        }
    }
}

extension NameTree.Weighted: Sendable where Value: Sendable {}
extension NameTree: Sendable where Value: Sendable {}
extension NameTree.Weighted: Equatable where Value: Equatable {}
extension NameTree: Equatable where Value: Equatable {}
extension NameTree.Weighted: Hashable where Value: Hashable {}
extension NameTree: Hashable where Value: Hashable {}

extension NameTree {
    /// Removes structure that cannot matter, following Finagle's `simplified`:
    /// single-branch alternations and unions collapse, `neg` branches are dropped from both,
    /// an alternation stops at its first `fail` or `empty`-free resolved branch is kept as is,
    /// and zero-weight union branches are dropped.
    public var simplified: NameTree<Value> {
        switch self {
        case .alt(let trees):
            var kept: [NameTree<Value>] = []
            for tree in trees {
                let simple = tree.simplified
                if case .neg = simple { continue }
                kept.append(simple)
                if case .fail = simple { break }
            }
            switch kept.count {
            case 0: return .neg
            case 1: return kept[0]
            default: return .alt(kept)
            }
        case .union(let weighted):
            var kept: [Weighted] = []
            for item in weighted {
                let simple = item.tree.simplified
                if case .neg = simple { continue }
                if item.weight <= 0 { continue }
                kept.append(.init(weight: item.weight, tree: simple))
            }
            switch kept.count {
            case 0: return .neg
            case 1: return kept[0].tree
            default: return .union(kept)
            }
        case .leaf, .neg, .fail, .empty:
            return self
        }
    }
}

extension NameTree: CustomStringConvertible where Value: CustomStringConvertible {
    /// The dtab syntax for this tree: `/a | (0.5 * /b & 0.5 * /c)`.
    public var description: String { show(nested: false) }

    private func show(nested: Bool) -> String {
        switch self {
        case .leaf(let value): return value.description
        case .neg: return "~"
        case .fail: return "!"
        case .empty: return "$"
        case .alt(let trees):
            if trees.isEmpty { return "~" }
            let text = trees.map { $0.show(nested: true) }.joined(separator: " | ")
            return nested && trees.count > 1 ? "(\(text))" : text
        case .union(let weighted):
            if weighted.isEmpty { return "~" }
            let text = weighted.map { item -> String in
                let inner = item.tree.show(nested: true)
                return item.weight == 1.0 ? inner : "\(NameTreeFormat.weight(item.weight))*\(inner)"
            }.joined(separator: " & ")
            return nested && weighted.count > 1 ? "(\(text))" : text
        }
    }
}

enum NameTreeFormat {
    /// Weights print without a trailing `.0` when whole (`1`, `0.25`), and never in exponent
    /// notation, which the dtab grammar (Finagle's too) does not read: `1e-07` would make a
    /// printed dtab — an `l5d-ctx-dtab` passed to the next hop — unreadable (found by fuzzing).
    static func weight(_ value: Double) -> String {
        if value == value.rounded(), abs(value) < 1e15 { return String(Int(value)) }
        return plainDecimal(value)
    }

    /// The shortest digits that read back as `value`, with the decimal point moved instead of an
    /// exponent.
    static func plainDecimal(_ value: Double) -> String {
        let text = String(value)
        guard let e = text.firstIndex(where: { $0 == "e" || $0 == "E" }), let exponent = Int(text[text.index(after: e)...]) else { return text }
        var mantissa = text[..<e]
        var sign = ""
        if mantissa.hasPrefix("-") {
            sign = "-"
            mantissa = mantissa.dropFirst()
        }
        let point = mantissa.firstIndex(of: ".").map { mantissa.distance(from: mantissa.startIndex, to: $0) } ?? mantissa.count
        var digits = String(mantissa.filter { $0 != "." })
        while digits.count > 1, digits.last == "0", digits.count > point + exponent { digits.removeLast() }
        let position = point + exponent
        if position <= 0 { return sign + "0." + String(repeating: "0", count: -position) + digits }
        if position >= digits.count { return sign + digits + String(repeating: "0", count: position - digits.count) }
        let index = digits.index(digits.startIndex, offsetBy: position)
        return sign + digits[..<index] + "." + digits[index...]
    }
}
