import Foundation
import MeshConfig
import Testing

/// Every config file shipped in the repository parses.
@Suite struct RepositoryConfigTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static var files: [String] {
        let directories = ["config", "config/examples"]
        return directories.flatMap { directory -> [String] in
            let path = root.appendingPathComponent(directory).path
            let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
            return names.filter { $0.hasSuffix(".yaml") || $0.hasSuffix(".yml") }.map { "\(directory)/\($0)" }
        }
    }

    @Test func thereAreConfigsToCheck() {
        #expect(Self.files.contains("config/meshd.yaml"))
    }

    @Test(arguments: files)
    func parses(_ file: String) throws {
        // rootDir paths are relative to the repository root, as when meshd runs from there.
        let previous = FileManager.default.currentDirectoryPath
        FileManager.default.changeCurrentDirectoryPath(Self.root.path)
        defer { FileManager.default.changeCurrentDirectoryPath(previous) }
        _ = try ConfigLoader.load(path: file)
    }
}
