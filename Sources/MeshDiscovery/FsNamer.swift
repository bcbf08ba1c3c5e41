// `io.l5d.fs`: one file per service under `rootDir`, each line an endpoint. The directory is read
// once at start and again whenever it changes (see `DirectoryWatcher`); lookups answer from memory
// and never touch the disk. A missing file is "no such name" (`neg`), so a dtab alternation falls
// through to its next branch. A line that does not parse is logged and counted and the rest of the
// file still applies; if the directory itself cannot be read, the last good answers stay.

import Foundation
import Logging
import MeshCore
import MeshTelemetry
import NIOConcurrencyHelpers

public final class FsNamer: Namer, Sendable {
    public let kind = "io.l5d.fs"
    public let prefix: Path
    public let rootDir: String
    public let generation = Watchable<UInt64>(0)
    private let logger: Logger
    private let metrics: DiscoveryMetrics

    private struct Entry {
        let addr: Watchable<Addr>
        var exists: Bool
        var contents: String?
        var problems: [EndpointFileProblem] = []
    }

    private let entries = NIOLockedValueBox<[String: Entry]>([:])
    private let scanLock = NIOLock()

    public init(prefix: Path, rootDir: String, logger: Logger, metrics: DiscoveryMetrics) {
        self.prefix = prefix
        self.rootDir = rootDir
        self.logger = logger
        self.metrics = metrics
    }

    public func lookup(_ path: Path) -> NameTree<BoundName> {
        guard let name = path.segments.first else { return .neg }
        let addr = entries.withLockedValue { entries -> Watchable<Addr>? in
            guard let entry = entries[name], entry.exists else { return nil }
            return entry.addr
        }
        guard let addr else { return .neg }
        let id = Path(segments: ["#"] + prefix.segments + [name])
        return .leaf(BoundName(id: id, residual: path.dropFirst(1), addr: addr))
    }

    public func state() -> NamerState {
        entries.withLockedValue { entries in
            var names: [String: Addr] = [:]
            var problems: [String: [String]] = [:]
            for (name, entry) in entries where entry.exists {
                names[name] = entry.addr.value
                if !entry.problems.isEmpty { problems[name] = entry.problems.map(\.description) }
            }
            return NamerState(kind: kind, prefix: prefix, names: names, problems: problems)
        }
    }

    /// Reads the directory and publishes what changed. Blocking (file reads, host name lookups):
    /// call it from the watcher thread, never from an event loop. Returns false when the directory
    /// could not be read.
    @discardableResult
    public func rescan() -> Bool {
        scanLock.withLock { rescanLocked() }
    }

    private func rescanLocked() -> Bool {
        let files: [String: String]
        do {
            files = try readDirectory()
        } catch {
            metrics.errors(namer: kind, name: "", kind: "directory_unreadable").increment()
            logger.error("cannot read io.l5d.fs rootDir; keeping the last answers", metadata: [
                LogKeys.rootDir: "\(rootDir)", LogKeys.error: "\(error)",
            ])
            return false
        }
        var published: [(Watchable<Addr>, Addr)] = []
        var existenceChanged = false
        var reports: [(String, [EndpointFileProblem])] = []
        var resolvedAddrs: [String: Addr] = [:]
        var removed: [String] = []

        let current = entries.withLockedValue { $0 }
        for (name, contents) in files where current[name]?.contents != contents || current[name]?.exists != true {
            let (parsed, problems) = EndpointFileParser.parse(contents)
            var allProblems = problems
            var endpoints: [Endpoint] = []
            for entry in parsed {
                guard let ip = HostResolver.resolve(entry.host) else {
                    allProblems.append(EndpointFileProblem(line: entry.line, text: "\(entry.host) \(entry.port)", reason: "host does not resolve"))
                    continue
                }
                endpoints.append(Endpoint(host: ip, port: entry.port, weight: entry.weight))
            }
            resolvedAddrs[name] = .bound(endpoints)
            if !allProblems.isEmpty { reports.append((name, allProblems)) }
        }

        entries.withLockedValue { entries in
            for (name, contents) in files {
                guard let addr = resolvedAddrs[name] else { continue }
                if var entry = entries[name] {
                    if !entry.exists { existenceChanged = true }
                    entry.exists = true
                    entry.contents = contents
                    entry.problems = reports.first { $0.0 == name }?.1 ?? []
                    entries[name] = entry
                    if entry.addr.value != addr { published.append((entry.addr, addr)) }
                } else {
                    let watchable = Watchable<Addr>(addr)
                    entries[name] = Entry(addr: watchable, exists: true, contents: contents, problems: reports.first { $0.0 == name }?.1 ?? [])
                    existenceChanged = true
                }
            }
            for (name, entry) in entries where entry.exists && files[name] == nil {
                entries[name]?.exists = false
                entries[name]?.contents = nil
                existenceChanged = true
                published.append((entry.addr, .neg))
                removed.append(name)
            }
        }

        for (name, problems) in reports {
            for problem in problems {
                metrics.errors(namer: kind, name: name, kind: "bad_line").increment()
                logger.warning("skipping a bad line in a service file", metadata: [
                    LogKeys.file: "\(rootDir)/\(name)", LogKeys.line: "\(problem.line)",
                    LogKeys.reason: "\(problem.reason)", LogKeys.text: "\(problem.text)",
                ])
            }
        }
        // Existence first: requests that start from now on delegate afresh, before the names
        // that vanished report `neg` to the clients still holding them.
        if existenceChanged {
            generation.set(generation.value &+ 1)
        }
        for (watchable, addr) in published {
            watchable.set(addr)
        }
        for (name, addr) in resolvedAddrs {
            metrics.updates(namer: kind, name: name).increment()
            metrics.endpoints(namer: kind, name: name).set(Int64(addr.endpoints.count))
            logger.info("service file read", metadata: [
                LogKeys.file: "\(rootDir)/\(name)", LogKeys.endpoints: "\(addr.endpoints.count)",
            ])
        }
        for name in removed {
            metrics.endpoints(namer: kind, name: name).set(Int64(0))
            logger.info("service file removed", metadata: [LogKeys.file: "\(rootDir)/\(name)"])
        }
        return true
    }

    /// Regular files (or links to them) directly under rootDir, skipping hidden names.
    private func readDirectory() throws -> [String: String] {
        let manager = FileManager.default
        var files: [String: String] = [:]
        for name in try manager.contentsOfDirectory(atPath: rootDir) where !name.hasPrefix(".") {
            let path = rootDir + "/" + name
            var isDirectory: ObjCBool = false
            guard manager.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue else { continue }
            guard let data = manager.contents(atPath: path) else { continue }
            files[name] = String(decoding: data, as: UTF8.self)
        }
        return files
    }
}
