import Foundation

/// A fresh directory under the system's temporary directory, removed by `remove()`.
public struct TemporaryDirectory: Sendable {
    public let path: String

    public init(_ prefix: String = "meshd-test") throws {
        path = NSTemporaryDirectory() + "\(prefix)-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    public func write(_ name: String, _ contents: String) throws {
        // Write-then-rename, as careful writers do, so watchers never see a half-written file.
        let temporary = path + "/.\(name).tmp"
        try contents.write(toFile: temporary, atomically: false, encoding: .utf8)
        _ = rename(temporary, path + "/" + name)
    }

    public func delete(_ name: String) throws {
        try FileManager.default.removeItem(atPath: path + "/" + name)
    }

    public func remove() {
        try? FileManager.default.removeItem(atPath: path)
    }
}
