/// A path, name tree or dtab that does not parse, with the position of the offending character.
public struct NameSyntaxError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What was expected or what is wrong, e.g. `expected '=>'`.
    public var message: String
    /// The text that was being read.
    public var text: String
    /// Offset of the offending character, in Unicode scalars from the start of `text`.
    public var offset: Int

    public init(message: String, text: String, offset: Int) {
        self.message = message
        self.text = text
        self.offset = offset
    }

    /// 1-based line and column of the offending character within `text`.
    public var lineAndColumn: (line: Int, column: Int) {
        var line = 1
        var column = 1
        for (index, scalar) in text.unicodeScalars.enumerated() {
            if index == offset { break }
            if scalar == "\n" {
                line += 1
                column = 1
            } else {
                column += 1
            }
        }
        return (line, column)
    }

    /// The line of `text` that holds the error, with a caret under the offending character.
    public var pointer: String {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        let (line, column) = lineAndColumn
        guard line - 1 < lines.count else { return "" }
        return String(lines[line - 1]) + "\n" + String(repeating: " ", count: max(0, column - 1)) + "^"
    }

    public var description: String {
        let (line, column) = lineAndColumn
        return "\(message) at line \(line), column \(column):\n\(pointer)"
    }
}
