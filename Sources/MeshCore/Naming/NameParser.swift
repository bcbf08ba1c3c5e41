// The reader for paths, name trees and dtabs (Finagle's `NameTreeParsers` grammar):
//
//   dtab     ::= (dentry (';' dentry)*)? ';'?
//   dentry   ::= prefix '=>' tree
//   tree     ::= tree1 ('|' tree1)*              -- alternation binds loosest
//   tree1    ::= weighted ('&' weighted)*        -- weighted union
//   weighted ::= (number '*')? simple
//   simple   ::= '(' tree ')' | path | '~' | '!' | '$'
//   path     ::= '/' | ('/' segment)+            -- segment: showable chars and \xNN escapes
//   prefix   ::= '/' | ('/' (segment | '*'))+
//
// Whitespace may stand between tokens; `#` at the start of a token starts a comment that runs
// to the end of the line.
//
// The parser is recursive descent, one level per `(`; dtabs can come from request headers, so
// parentheses nest at most `maxNesting` deep (every later walk over the tree — delegation,
// hashing, printing — recurses as deep as the tree, so the limit bounds them too).

struct NameParser {
    private let text: String
    private let scalars: [Unicode.Scalar]
    private var index = 0
    private var nesting = 0

    /// Parentheses inside parentheses, at most.
    static let maxNesting = 32

    init(_ text: String) {
        self.text = text
        self.scalars = Array(text.unicodeScalars)
    }

    // MARK: entry points

    mutating func parseStandalonePath() throws(NameSyntaxError) -> Path {
        skipWhitespace()
        let path = try parsePath()
        try expectEnd()
        return path
    }

    mutating func parseStandaloneTree() throws(NameSyntaxError) -> NameTree<Path> {
        let tree = try parseTree()
        try expectEnd()
        return tree
    }

    mutating func parseStandaloneDtab() throws(NameSyntaxError) -> Dtab {
        var dentries: [Dentry] = []
        skipWhitespace()
        while !atEnd {
            dentries.append(try parseDentry())
            skipWhitespace()
            if atEnd { break }
            guard peek == ";" else { throw error("expected ';' or end of dtab") }
            index += 1
            skipWhitespace()
        }
        return Dtab(dentries: dentries)
    }

    // MARK: grammar

    private mutating func parseDentry() throws(NameSyntaxError) -> Dentry {
        let prefix = try parsePrefix()
        skipWhitespace()
        guard peek == "=", peek(at: 1) == ">" else { throw error("expected '=>'") }
        index += 2
        let tree = try parseTree()
        return Dentry(prefix: prefix, destination: tree)
    }

    private mutating func parseTree() throws(NameSyntaxError) -> NameTree<Path> {
        var branches = [try parseUnion()]
        skipWhitespace()
        while peek == "|" {
            index += 1
            branches.append(try parseUnion())
            skipWhitespace()
        }
        return branches.count == 1 ? branches[0] : .alt(branches)
    }

    private mutating func parseUnion() throws(NameSyntaxError) -> NameTree<Path> {
        let first = try parseWeighted()
        skipWhitespace()
        guard peek == "&" else {
            // A weight on a lone term is dropped, as in Finagle: it only matters inside a union.
            return first.tree
        }
        var items = [first]
        while peek == "&" {
            index += 1
            items.append(try parseWeighted())
            skipWhitespace()
        }
        return .union(items)
    }

    private mutating func parseWeighted() throws(NameSyntaxError) -> NameTree<Path>.Weighted {
        skipWhitespace()
        guard let scalar = peek, scalar.properties.numericType != nil || scalar == "." else {
            return .init(weight: NameTree<Path>.Weighted.defaultWeight, tree: try parseSimple())
        }
        let start = index
        while let next = peek, ("0"..."9").contains(next) || next == "." { index += 1 }
        let literal = String(String.UnicodeScalarView(scalars[start..<index]))
        guard let weight = Double(literal), weight.isFinite, weight >= 0 else {
            index = start
            throw error("invalid weight '\(literal)'")
        }
        skipWhitespace()
        guard peek == "*" else { throw error("expected '*' after weight") }
        index += 1
        return .init(weight: weight, tree: try parseSimple())
    }

    private mutating func parseSimple() throws(NameSyntaxError) -> NameTree<Path> {
        skipWhitespace()
        switch peek {
        case "(":
            guard nesting < Self.maxNesting else { throw error("parentheses nested more than \(Self.maxNesting) deep") }
            index += 1
            nesting += 1
            defer { nesting -= 1 }
            let tree = try parseTree()
            skipWhitespace()
            guard peek == ")" else { throw error("expected ')'") }
            index += 1
            return tree
        case "/":
            return .leaf(try parsePath())
        case "~":
            index += 1
            return .neg
        case "!":
            index += 1
            return .fail
        case "$":
            index += 1
            return .empty
        case nil:
            throw error("expected a name tree (a path, '~', '!', '$' or '('), found end of text")
        default:
            throw error("expected a name tree (a path, '~', '!', '$' or '(')")
        }
    }

    private mutating func parsePath() throws(NameSyntaxError) -> Path {
        var segments: [String] = []
        guard peek == "/" else { throw error("expected '/'") }
        // "/" alone is the empty path.
        if !isSegmentStart(peek(at: 1)) {
            index += 1
            return .empty
        }
        while peek == "/" {
            index += 1
            segments.append(try parseSegment(allowWildcard: false) ?? "")
        }
        return Path(segments: segments)
    }

    private mutating func parsePrefix() throws(NameSyntaxError) -> Dentry.Prefix {
        var elements: [Dentry.Prefix.Element] = []
        guard peek == "/" else { throw error("expected a prefix starting with '/'") }
        if !isSegmentStart(peek(at: 1)) && peek(at: 1) != "*" {
            index += 1
            return Dentry.Prefix(elements: [])
        }
        while peek == "/" {
            index += 1
            if let label = try parseSegment(allowWildcard: true) {
                elements.append(.label(label))
            } else {
                elements.append(.any)
            }
        }
        return Dentry.Prefix(elements: elements)
    }

    /// A segment's text, or nil for a `*` wildcard (only where `allowWildcard`).
    private mutating func parseSegment(allowWildcard: Bool) throws(NameSyntaxError) -> String? {
        if allowWildcard, peek == "*" {
            index += 1
            if let next = peek, isSegmentStart(next) { throw error("'*' must be a whole segment") }
            return nil
        }
        var bytes: [UInt8] = []
        while let scalar = peek {
            if scalar == "\\" {
                guard peek(at: 1) == "x", let high = hexValue(peek(at: 2)), let low = hexValue(peek(at: 3)) else {
                    throw error("invalid escape: expected \\xNN")
                }
                bytes.append(high << 4 | low)
                index += 4
            } else if scalar.isASCII, Path.isShowable(UInt8(scalar.value)) {
                bytes.append(UInt8(scalar.value))
                index += 1
            } else {
                break
            }
        }
        if bytes.isEmpty {
            if peek == "/" || peek == nil || peek.map(isDelimiter) == true {
                throw error("empty path segment")
            }
            throw error("character not allowed in a path segment (escape it as \\xNN)")
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    // MARK: scanning

    private var atEnd: Bool { index >= scalars.count }

    private var peek: Unicode.Scalar? { index < scalars.count ? scalars[index] : nil }

    private func peek(at offset: Int) -> Unicode.Scalar? {
        index + offset < scalars.count ? scalars[index + offset] : nil
    }

    private func isSegmentStart(_ scalar: Unicode.Scalar?) -> Bool {
        guard let scalar else { return false }
        if scalar == "\\" { return true }
        return scalar.isASCII && Path.isShowable(UInt8(scalar.value))
    }

    private func isDelimiter(_ scalar: Unicode.Scalar) -> Bool {
        scalar == " " || scalar == "\t" || scalar == "\n" || scalar == "\r" || scalar == ";" || scalar == "|"
            || scalar == "&" || scalar == ")" || scalar == "="
    }

    private func hexValue(_ scalar: Unicode.Scalar?) -> UInt8? {
        guard let scalar else { return nil }
        switch scalar {
        case "0"..."9": return UInt8(scalar.value - 48)
        case "a"..."f": return UInt8(scalar.value - 87)
        case "A"..."F": return UInt8(scalar.value - 55)
        default: return nil
        }
    }

    private mutating func skipWhitespace() {
        while let scalar = peek {
            if scalar == " " || scalar == "\t" || scalar == "\n" || scalar == "\r" {
                index += 1
            } else if scalar == "#" {
                while let next = peek, next != "\n" { index += 1 }
            } else {
                break
            }
        }
    }

    private mutating func expectEnd() throws(NameSyntaxError) {
        skipWhitespace()
        guard atEnd else { throw error("unexpected character") }
    }

    private func error(_ message: String) -> NameSyntaxError {
        var offset = min(index, scalars.count)
        if offset == scalars.count {
            // At the end of the text, point just past the last thing written, not at a trailing
            // newline (a YAML block scalar always ends with one).
            while offset > 0, [" ", "\t", "\n", "\r"].contains(scalars[offset - 1]) { offset -= 1 }
        }
        return NameSyntaxError(message: message, text: text, offset: offset)
    }
}
