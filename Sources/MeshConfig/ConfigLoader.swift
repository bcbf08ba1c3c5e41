// Reading a config file: YAML (or JSON, which is YAML) into `MeshdConfig`, with every problem
// reported at once.

import Foundation
import Yams

public enum ConfigLoader {
    /// Reads and validates the file at `path`.
    public static func load(path: String) throws(ConfigErrors) -> MeshdConfig {
        guard let data = FileManager.default.contents(atPath: path) else {
            let reason = FileManager.default.fileExists(atPath: path) ? "cannot read the file (permissions?)" : "no such file"
            throw ConfigErrors([ConfigError(file: path, line: 0, column: 0, keyPath: "", message: reason)])
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ConfigErrors([ConfigError(file: path, line: 0, column: 0, keyPath: "", message: "the file is not UTF-8 text")])
        }
        return try parse(text, file: path)
    }

    /// Reads and validates config text; `file` names it in errors.
    public static func parse(_ text: String, file: String) throws(ConfigErrors) -> MeshdConfig {
        let diagnostics = ConfigDiagnostics(file: file, source: text)
        let root: Node
        do {
            guard let node = try Yams.compose(yaml: text) else {
                throw ConfigErrors([ConfigError(file: file, line: 1, column: 1, keyPath: "", message: "the file is empty; it needs at least a 'routers' list")])
            }
            root = node
        } catch let error as ConfigErrors {
            throw error
        } catch {
            throw ConfigErrors([yamlError(error, file: file)])
        }
        let config = MeshdConfig.read(ConfigNode(node: root, path: "", diagnostics: diagnostics))
        if !diagnostics.errors.isEmpty {
            throw ConfigErrors(diagnostics.errors.sorted { ($0.line, $0.column) < ($1.line, $1.column) })
        }
        return config
    }

    private static func yamlError(_ error: any Error, file: String) -> ConfigError {
        guard let yaml = error as? YamlError else {
            return ConfigError(file: file, line: 0, column: 0, keyPath: "", message: "invalid YAML: \(error)")
        }
        switch yaml {
        case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _), .composer(let context, let problem, let mark, _):
            let detail = context.map { "\($0.text) ; \(problem)" } ?? problem
            return ConfigError(file: file, line: mark.line, column: mark.column, keyPath: "", message: "invalid YAML: \(detail)")
        case .duplicatedKeysInMapping(let duplicates, let context):
            return ConfigError(file: file, line: context.mark.line, column: context.mark.column, keyPath: "", message: "duplicate keys in one mapping: \(duplicates.joined(separator: ", "))")
        default:
            return ConfigError(file: file, line: 0, column: 0, keyPath: "", message: "invalid YAML: \(yaml)")
        }
    }
}
