// Delegation tables: ordered rewrite rules from name prefixes to name trees.
//
// Finagle's `Dtab`: `prefix => tree` entries, read top to bottom but consulted bottom to top, so a
// later entry overrides an earlier one for the names it matches. A prefix element `*` matches
// any one segment.

/// One rewrite rule, `prefix => destination`.
public struct Dentry: Hashable, Sendable, CustomStringConvertible {
    public var prefix: Prefix
    public var destination: NameTree<Path>

    public init(prefix: Prefix, destination: NameTree<Path>) {
        self.prefix = prefix
        self.destination = destination
    }

    /// A dentry's left-hand side: literal segments, and `*` for any one segment.
    public struct Prefix: Hashable, Sendable, CustomStringConvertible {
        public enum Element: Hashable, Sendable {
            case label(String)
            case any
        }

        public var elements: [Element]

        public init(elements: [Element]) { self.elements = elements }

        public init(_ path: Path) { self.elements = path.segments.map { .label($0) } }

        /// Whether `path` begins with this prefix.
        @inlinable
        public func matches(_ path: Path) -> Bool {
            guard elements.count <= path.segments.count else { return false }
            var index = 0
            for element in elements {
                if case .label(let label) = element, label != path.segments[index] { return false }
                index += 1
            }
            return true
        }

        public var count: Int { elements.count }

        public var description: String {
            if elements.isEmpty { return "/" }
            return elements.map { element -> String in
                switch element {
                case .label(let label): return "/" + Path.show(label)
                case .any: return "/*"
                }
            }.joined()
        }
    }

    public var description: String { "\(prefix)=>\(destination)" }
}

/// An ordered list of dentries.
public struct Dtab: Hashable, Sendable, CustomStringConvertible {
    public var dentries: [Dentry]

    public static let empty = Dtab(dentries: [])

    public init(dentries: [Dentry]) { self.dentries = dentries }

    public var isEmpty: Bool { dentries.isEmpty }

    /// This dtab followed by `other`, whose entries take precedence.
    public static func + (lhs: Dtab, rhs: Dtab) -> Dtab {
        Dtab(dentries: lhs.dentries + rhs.dentries)
    }

    /// The dtab syntax: `/a=>/b;/c=>/d`.
    public var description: String { dentries.map(\.description).joined(separator: ";") }

    /// Reads dtab text: `prefix => tree` entries separated by `;`, with `#` comments to the end
    /// of a line.
    ///
    /// - Throws: `NameSyntaxError` naming the offending character's offset.
    public static func read(_ text: String) throws(NameSyntaxError) -> Dtab {
        var parser = NameParser(text)
        return try parser.parseStandaloneDtab()
    }
}

extension NameTree where Value == Path {
    /// Reads a name tree such as `/a | 0.5 * /b & 0.5 * /c`.
    public static func read(_ text: String) throws(NameSyntaxError) -> NameTree<Path> {
        var parser = NameParser(text)
        return try parser.parseStandaloneTree()
    }
}

extension Dtab {
    /// One rewrite step (Finagle's `Dtab.lookup`): every dentry whose prefix matches `path`
    /// contributes its destination with the unmatched rest of the path appended to each leaf;
    /// later dentries come first in the resulting alternation. `.neg` when nothing matches.
    public func lookup(_ path: Path) -> NameTree<Path> {
        var matches: [NameTree<Path>] = []
        for dentry in dentries.reversed() where dentry.prefix.matches(path) {
            let rest = path.dropFirst(dentry.prefix.count)
            matches.append(rest.isEmpty ? dentry.destination : dentry.destination.map { $0 + rest })
        }
        switch matches.count {
        case 0: return .neg
        case 1: return matches[0]
        default: return .alt(matches)
        }
    }

    /// The dentries that match `path`, latest first, each with its rewritten destination.
    public func matches(_ path: Path) -> [(dentry: Dentry, rewritten: NameTree<Path>)] {
        dentries.reversed().filter { $0.prefix.matches(path) }.map { dentry in
            let rest = path.dropFirst(dentry.prefix.count)
            return (dentry, rest.isEmpty ? dentry.destination : dentry.destination.map { $0 + rest })
        }
    }
}
