// A typed walk over the YAML tree that remembers where each value stood. Readers ask for keys;
// wrong types, out-of-range values, missing required keys and (at `finish()`) unknown keys are
// recorded as errors with file, line, column and key path, and reading carries on so that one
// pass reports everything.

import Yams

/// Collects the errors of one config file.
final class ConfigDiagnostics {
    let file: String
    private let lines: [Substring]
    private(set) var errors: [ConfigError] = []

    init(file: String, source: String) {
        self.file = file
        self.lines = source.split(separator: "\n", omittingEmptySubsequences: false)
    }

    func report(_ message: String, at mark: Mark?, path: String) {
        report(message, line: mark?.line ?? 0, column: mark?.column ?? 0, path: path)
    }

    func report(_ message: String, line: Int, column: Int, path: String) {
        errors.append(ConfigError(file: file, line: line, column: column, keyPath: path, message: message))
    }

    /// Leading spaces of a 1-based source line.
    func indentation(ofLine line: Int) -> Int {
        guard line >= 1, line <= lines.count else { return 0 }
        return lines[line - 1].prefix(while: { $0 == " " }).count
    }
}

/// A value in the document, with its key path.
struct ConfigNode {
    let node: Node
    let path: String
    let diagnostics: ConfigDiagnostics

    var mark: Mark? { node.mark }

    func error(_ message: String) {
        diagnostics.report(message, at: mark, path: path)
    }

    private var found: String {
        switch node {
        case .scalar(let scalar): return scalar.string.isEmpty ? "an empty value" : "\"\(scalar.string)\""
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .alias: return "an alias"
        }
    }

    var isNull: Bool {
        if case .scalar(let scalar) = node { return scalar.tag.description == Tag.Name.null.rawValue || (scalar.string.isEmpty && scalar.style == .plain) || scalar.string == "~" }
        return false
    }

    // MARK: scalars

    var string: String? {
        guard case .scalar(let scalar) = node else {
            error("expected a string, found \(found)")
            return nil
        }
        return scalar.string
    }

    func int(in range: ClosedRange<Int>? = nil) -> Int? {
        guard case .scalar(let scalar) = node, let value = node.int ?? Int(scalar.string) else {
            error("expected an integer, found \(found)")
            return nil
        }
        if let range, !range.contains(value) {
            error("\(value) is out of range; expected \(RangeText.describe(range))")
            return nil
        }
        return value
    }

    func double(in range: ClosedRange<Double>? = nil) -> Double? {
        guard case .scalar(let scalar) = node, let value = node.float ?? node.int.map(Double.init) ?? Double(scalar.string), value.isFinite else {
            error("expected a number, found \(found)")
            return nil
        }
        if let range, !range.contains(value) {
            error("\(value) is out of range; expected \(range.lowerBound) to \(range.upperBound)")
            return nil
        }
        return value
    }

    var bool: Bool? {
        guard case .scalar(let scalar) = node else {
            error("expected true or false, found \(found)")
            return nil
        }
        switch scalar.string.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default:
            error("expected true or false, found \(found)")
            return nil
        }
    }

    /// A string that must be one of `choices`.
    func choice(_ choices: [String]) -> String? {
        guard let value = string else { return nil }
        guard choices.contains(value) else {
            error("'\(value)' is not one of \(choices.map { "'\($0)'" }.joined(separator: ", "))\(Suggestion.didYouMean(value, in: choices))")
            return nil
        }
        return value
    }

    // MARK: collections

    var sequence: [ConfigNode]? {
        guard case .sequence(let sequence) = node else {
            if isNull { return [] }
            error("expected a list, found \(found)")
            return nil
        }
        return sequence.enumerated().map { ConfigNode(node: $1, path: "\(path)[\($0)]", diagnostics: diagnostics) }
    }

    var mapping: ConfigMapping? {
        guard case .mapping(let mapping) = node else {
            if isNull { return ConfigMapping(empty: self) }
            error("expected a mapping of keys to values, found \(found)")
            return nil
        }
        return ConfigMapping(mapping, at: self)
    }
}

/// A mapping being read: tracks which keys were asked for so that the rest can be reported.
final class ConfigMapping {
    let origin: ConfigNode
    private var entries: [(key: String, keyNode: Node, value: Node)] = []
    private var consumed: Set<String> = []
    private var known: [String] = []

    init(_ mapping: Node.Mapping, at origin: ConfigNode) {
        self.origin = origin
        for (key, value) in mapping {
            entries.append((key.string ?? "\(key)", key, value))
        }
    }

    init(empty origin: ConfigNode) {
        self.origin = origin
    }

    var diagnostics: ConfigDiagnostics { origin.diagnostics }

    var keys: [String] { entries.map(\.key) }

    private func childPath(_ key: String) -> String {
        origin.path.isEmpty ? key : "\(origin.path).\(key)"
    }

    /// The value under `key`, or nil when absent (or explicitly null).
    func optional(_ key: String) -> ConfigNode? {
        known.append(key)
        consumed.insert(key)
        guard let entry = entries.first(where: { $0.key == key }) else { return nil }
        let node = ConfigNode(node: entry.value, path: childPath(key), diagnostics: diagnostics)
        return node.isNull ? nil : node
    }

    /// The value under `key`; a missing key is an error.
    func required(_ key: String, hint: String = "") -> ConfigNode? {
        guard let node = optional(key) else {
            diagnostics.report("missing required key '\(key)'\(hint.isEmpty ? "" : "; \(hint)")", at: origin.mark, path: childPath(key))
            return nil
        }
        return node
    }

    /// Whether `key` is present at all.
    func has(_ key: String) -> Bool { entries.contains { $0.key == key } }

    /// Declares keys that Linkerd 1.x accepts and meshd does not implement: present, they are
    /// errors that say so (never silently ignored).
    func unsupported(_ keys: [String], _ reason: String) {
        for key in keys {
            known.append(key)
            consumed.insert(key)
            if let entry = entries.first(where: { $0.key == key }) {
                diagnostics.report("'\(key)' is not supported by meshd: \(reason)", at: entry.keyNode.mark, path: childPath(key))
            }
        }
    }

    /// Declares keys that are accepted and have no effect, because meshd always behaves as they
    /// ask (documented in docs/compat.md).
    func accepted(_ keys: [String]) {
        for key in keys {
            known.append(key)
            consumed.insert(key)
        }
    }

    /// Reports every key that no reader asked for.
    func finish() {
        for entry in entries where !consumed.contains(entry.key) {
            let suggestion = Suggestion.didYouMean(entry.key, in: known)
            let list = known.isEmpty ? "no keys are allowed here" : "allowed keys: \(known.joined(separator: ", "))"
            diagnostics.report("unknown key '\(entry.key)'\(suggestion); \(list)", at: entry.keyNode.mark, path: childPath(entry.key))
        }
    }

    // MARK: typed shortcuts

    func string(_ key: String) -> String? { optional(key)?.string }
    func int(_ key: String, in range: ClosedRange<Int>? = nil) -> Int? { optional(key)?.int(in: range) }
    func double(_ key: String, in range: ClosedRange<Double>? = nil) -> Double? { optional(key)?.double(in: range) }
    func bool(_ key: String) -> Bool? { optional(key)?.bool }
}

enum RangeText {
    static func describe(_ range: ClosedRange<Int>) -> String {
        if range.upperBound == .max { return "at least \(range.lowerBound)" }
        return "\(range.lowerBound) to \(range.upperBound)"
    }
}
