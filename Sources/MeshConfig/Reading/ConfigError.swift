// Config errors name the file, the line and column, the key path and what to do about it, and
// `meshd check` reports every one of them at once.

/// One problem in a config file.
public struct ConfigError: Error, Hashable, Sendable, CustomStringConvertible {
    public var file: String
    /// 1-based; 0 when the problem has no position (e.g. the file cannot be read).
    public var line: Int
    public var column: Int
    /// Where in the document, e.g. `routers[0].servers[0].port`; empty for the whole file.
    public var keyPath: String
    public var message: String

    public init(file: String, line: Int, column: Int, keyPath: String, message: String) {
        self.file = file
        self.line = line
        self.column = column
        self.keyPath = keyPath
        self.message = message
    }

    /// `meshd.yaml:12:7: routers[0].servers[0].port: expected an integer, found "http"`
    public var description: String {
        var out = file
        if line > 0 { out += ":\(line):\(column)" }
        out += ": "
        if !keyPath.isEmpty { out += "\(keyPath): " }
        return out + message
    }
}

/// Every problem found in one config file.
public struct ConfigErrors: Error, Sendable, CustomStringConvertible {
    public var errors: [ConfigError]

    public init(_ errors: [ConfigError]) { self.errors = errors }

    public var description: String {
        let noun = errors.count == 1 ? "error" : "errors"
        return "\(errors.count) config \(noun):\n" + errors.map { "  " + $0.description }.joined(separator: "\n")
    }
}
