import Foundation
import MeshCore

/// `namers[]`: discovery backends, reached from dtabs as `/#/<prefix>/…`.
public enum NamerConfig: Sendable, Hashable, JSONRepresentable {
    case fs(FsNamerConfig)

    public static let supportedKinds = ["io.l5d.fs"]
    static let linkerdKinds = [
        "io.l5d.serversets", "io.l5d.zkLeader", "io.l5d.curator", "io.l5d.consul", "io.l5d.k8s",
        "io.l5d.k8s.external", "io.l5d.k8s.ns", "io.l5d.k8s.istio", "io.l5d.marathon", "io.l5d.dnssrv",
        "io.l5d.rancher", "io.l5d.rewrite",
    ]

    public var kind: String {
        switch self {
        case .fs: return "io.l5d.fs"
        }
    }

    /// The path under `/#` that selects this namer, e.g. `/io.l5d.fs`.
    public var prefix: Path {
        switch self {
        case .fs(let config): return config.prefix
        }
    }

    static func read(_ node: ConfigNode) -> NamerConfig? {
        guard let m = node.mapping else { return nil }
        defer { m.finish() }
        guard let kind = m.kind(supported: supportedKinds, linkerdOnly: linkerdKinds, what: "namer") else {
            m.accepted(m.keys)
            return nil
        }
        m.accepted(["experimental"])
        m.unsupported(["transformers"], "namer transformers are not implemented yet")
        let prefix = m.optional("prefix").flatMap { PathSyntax.read($0) } ?? Path(kind)
        switch kind {
        case "io.l5d.fs":
            return .fs(FsNamerConfig.read(m, prefix: prefix))
        default:
            return nil
        }
    }

    public var json: JSONValue {
        switch self {
        case .fs(let config): return config.json
        }
    }
}

/// `io.l5d.fs`: one file per service in `rootDir`.
public struct FsNamerConfig: Sendable, Hashable, JSONRepresentable {
    /// Default `/io.l5d.fs`.
    public var prefix: Path
    /// The directory of service files; required; relative paths are relative to meshd's working
    /// directory. Must exist and be a directory.
    public var rootDir: String

    static func read(_ m: ConfigMapping, prefix: Path) -> FsNamerConfig {
        var rootDir = ""
        if let node = m.required("rootDir", hint: "name the directory that holds one file per service"), let value = node.string {
            rootDir = value
            var isDirectory: ObjCBool = false
            if !FileManager.default.fileExists(atPath: value, isDirectory: &isDirectory) {
                node.error("directory '\(value)' does not exist (relative paths are relative to the working directory, \(FileManager.default.currentDirectoryPath))")
            } else if !isDirectory.boolValue {
                node.error("'\(value)' is a file; rootDir must be a directory")
            }
        }
        return FsNamerConfig(prefix: prefix, rootDir: rootDir)
    }

    public var json: JSONValue {
        .object([("kind", .string("io.l5d.fs")), ("prefix", .string(prefix.description)), ("rootDir", .string(rootDir))])
    }
}

enum PathSyntax {
    static func read(_ node: ConfigNode) -> Path? {
        guard let text = node.string else { return nil }
        do {
            return try Path.read(text)
        } catch {
            node.error("invalid path '\(text)': \(error.message) at offset \(error.offset)")
            return nil
        }
    }
}
