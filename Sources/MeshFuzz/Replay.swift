// Replaying saved inputs through a fuzz target, without libFuzzer: the corpus seeds and every
// input a fuzzing run ever crashed on (Tests/Fuzz/), as part of the normal test suite.

import Foundation

enum Replay {
    static func main(_ arguments: [String]) {
        let names = FuzzTarget.allCases.map(\.rawValue).joined(separator: ", ")
        guard arguments.count >= 4, arguments[1] == "replay", let target = FuzzTarget(rawValue: arguments[2]) else {
            FileHandle.standardError.write(Data("usage: meshd-fuzz replay TARGET FILE_OR_DIR...\n  targets: \(names)\n".utf8))
            exit(2)
        }
        var count = 0
        for path in arguments[3...] {
            for file in files(at: path) {
                guard let data = FileManager.default.contents(atPath: file) else {
                    FileHandle.standardError.write(Data("cannot read \(file)\n".utf8))
                    exit(1)
                }
                target.run([UInt8](data))
                count += 1
            }
        }
        print("\(target.rawValue): \(count) inputs replayed")
    }

    static func files(at path: String) -> [String] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { return [] }
        guard isDirectory.boolValue else { return [path] }
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        return entries.filter { !$0.hasPrefix(".") }.sorted().map { path + "/" + $0 }
    }
}
