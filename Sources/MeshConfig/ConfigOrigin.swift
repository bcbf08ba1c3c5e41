/// Where a config value was written, so that run-time problems (a port already in use) can point
/// back at the file, line and key.
public struct ConfigOrigin: Hashable, Sendable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int
    public var keyPath: String

    public init(file: String, line: Int, column: Int, keyPath: String) {
        self.file = file
        self.line = line
        self.column = column
        self.keyPath = keyPath
    }

    public static let builtIn = ConfigOrigin(file: "<built-in>", line: 0, column: 0, keyPath: "")

    public func error(_ message: String) -> ConfigError {
        ConfigError(file: file, line: line, column: column, keyPath: keyPath, message: message)
    }

    public var description: String { line > 0 ? "\(file):\(line):\(column) (\(keyPath))" : "\(file) (\(keyPath))" }
}

extension ConfigNode {
    var origin: ConfigOrigin {
        ConfigOrigin(file: diagnostics.file, line: mark?.line ?? 0, column: mark?.column ?? 0, keyPath: path)
    }
}
