// A hierarchical name: the unit that identifiers produce, dtabs rewrite and namers bind.
//
// Finagle's `Path`: a sequence of non-empty segments shown as `/a/b/c`; the empty path is `/`.
// Segments hold any bytes; characters outside the "showable" set are written as `\xNN` escapes
// so that every path has one textual form that reads back to itself.

/// A slash-separated name such as `/svc/users` or `/#/io.l5d.fs/users`.
public struct Path: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The segments, none of them empty.
    public var segments: [String]

    /// The empty path, `/`.
    public static let empty = Path(segments: [])

    public init(segments: [String]) {
        self.segments = segments
    }

    /// A path from literal segments, e.g. `Path("svc", "users")`.
    public init(_ segments: String...) {
        self.segments = segments
    }

    public var isEmpty: Bool { segments.isEmpty }
    public var count: Int { segments.count }

    public func starts(with prefix: Path) -> Bool {
        guard prefix.segments.count <= segments.count else { return false }
        for index in prefix.segments.indices where segments[index] != prefix.segments[index] {
            return false
        }
        return true
    }

    /// The segments after the first `count`.
    public func dropFirst(_ count: Int) -> Path {
        Path(segments: Array(segments.dropFirst(count)))
    }

    public func take(_ count: Int) -> Path {
        Path(segments: Array(segments.prefix(count)))
    }

    public static func + (lhs: Path, rhs: Path) -> Path {
        if rhs.isEmpty { return lhs }
        if lhs.isEmpty { return rhs }
        return Path(segments: lhs.segments + rhs.segments)
    }

    public func appending(_ segment: String) -> Path {
        Path(segments: segments + [segment])
    }

    /// The textual form, `/a/b`, with non-showable bytes escaped as `\xNN`.
    public var description: String {
        if segments.isEmpty { return "/" }
        var out = ""
        for segment in segments {
            out.append("/")
            out.append(Path.show(segment))
        }
        return out
    }

    public static func < (lhs: Path, rhs: Path) -> Bool {
        lhs.segments.lexicographicallyPrecedes(rhs.segments)
    }

    /// Characters that may stand in a path segment without escaping (Finagle's showable set).
    @inlinable
    public static func isShowable(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        case UInt8(ascii: "_"), UInt8(ascii: ":"), UInt8(ascii: "."), UInt8(ascii: "#"),
            UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "-"):
            return true
        default:
            return false
        }
    }

    static func show(_ segment: String) -> String {
        var out = ""
        for byte in segment.utf8 {
            if isShowable(byte) {
                out.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                out.append("\\x")
                out.append(hexDigit(byte >> 4))
                out.append(hexDigit(byte & 0xF))
            }
        }
        return out
    }

    private static func hexDigit(_ nibble: UInt8) -> Character {
        Character(Unicode.Scalar(nibble < 10 ? nibble + 48 : nibble + 87))
    }
}

extension Path {
    /// Reads a path in its textual form (`/a/b`, `\xNN` escapes allowed).
    ///
    /// - Throws: `NameSyntaxError` naming the offending character's offset.
    public static func read(_ text: String) throws(NameSyntaxError) -> Path {
        var parser = NameParser(text)
        let path = try parser.parseStandalonePath()
        return path
    }
}
