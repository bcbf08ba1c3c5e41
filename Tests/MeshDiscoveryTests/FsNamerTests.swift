import Foundation
import Logging
import MeshCore
import MeshDiscovery
import MeshTelemetry
import MeshTestSupport
import NIOConcurrencyHelpers
import Testing

@Suite struct FsNamerTests {
    func makeNamer(_ directory: TemporaryDirectory, metrics: MeshMetrics = MeshMetrics()) -> FsNamer {
        FsNamer(prefix: Path("io.l5d.fs"), rootDir: directory.path, logger: Logger(label: "test"), metrics: metrics.discovery)
    }

    @Test func bindsFilesAndNegsMissingOnes() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        try directory.write("web", "127.0.0.1 8080\n127.0.0.1 8081 * 2\n")
        let namer = makeNamer(directory)
        #expect(namer.rescan())
        guard case .leaf(let bound) = namer.lookup(Path("web", "extra")) else {
            Issue.record("expected a leaf")
            return
        }
        #expect(bound.id.description == "/#/io.l5d.fs/web")
        #expect(bound.residual == Path("extra"))
        #expect(bound.addr.value == .bound([Endpoint(host: "127.0.0.1", port: 8080), Endpoint(host: "127.0.0.1", port: 8081, weight: 2)]))
        #expect(namer.lookup(Path("missing")) == .neg)
    }

    @Test func updatesPublishAndExistenceChangesBumpTheGeneration() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        try directory.write("web", "127.0.0.1 8080\n")
        let namer = makeNamer(directory)
        namer.rescan()
        guard case .leaf(let bound) = namer.lookup(Path("web")) else { Issue.record("expected a leaf"); return }
        let seen = NIOLockedValueBox<[Addr]>([])
        let observation = bound.addr.observe { addr in seen.withLockedValue { $0.append(addr) } }
        defer { observation.cancel() }
        let generation = namer.generation.value

        try directory.write("web", "127.0.0.1 9090\n")
        namer.rescan()
        #expect(namer.generation.value == generation, "a content change is not an existence change")
        try directory.write("api", "127.0.0.1 7070\n")
        try directory.delete("web")
        namer.rescan()
        #expect(namer.generation.value != generation)
        #expect(namer.lookup(Path("web")) == .neg)
        #expect(seen.withLockedValue { $0 } == [
            .bound([Endpoint(host: "127.0.0.1", port: 8080)]),
            .bound([Endpoint(host: "127.0.0.1", port: 9090)]),
            .neg,
        ])
        // A name that comes back keeps its identity, so clients observing it resume.
        try directory.write("web", "127.0.0.1 8080\n")
        namer.rescan()
        guard case .leaf(let again) = namer.lookup(Path("web")) else { Issue.record("expected a leaf"); return }
        #expect(again.addr === bound.addr)
    }

    @Test func badLinesAreCountedAndTheRestApplies() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        try directory.write("web", "127.0.0.1 8080\ngarbage\n127.0.0.1 99999\n")
        let metrics = MeshMetrics()
        let namer = makeNamer(directory, metrics: metrics)
        namer.rescan()
        guard case .leaf(let bound) = namer.lookup(Path("web")) else { Issue.record("expected a leaf"); return }
        #expect(bound.addr.value.endpoints.count == 1)
        let text = metrics.prometheusText()
        #expect(text.contains(#"meshd_discovery_errors_total{namer="io.l5d.fs",name="web",kind="bad_line"} 2"#))
        #expect(namer.state().problems["web"]?.count == 2)
    }

    @Test func unreadableDirectoryKeepsTheLastAnswers() throws {
        let directory = try TemporaryDirectory()
        try directory.write("web", "127.0.0.1 8080\n")
        let namer = makeNamer(directory)
        namer.rescan()
        directory.remove()
        #expect(namer.rescan() == false)
        guard case .leaf(let bound) = namer.lookup(Path("web")) else { Issue.record("expected a leaf"); return }
        #expect(bound.addr.value.endpoints.count == 1)
    }

    @Test func watcherNoticesChanges() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let (changes, continuation) = AsyncStream.makeStream(of: Void.self)
        let watcher = DirectoryWatcher(directory: directory.path, pollInterval: .seconds(60), logger: Logger(label: "test")) {
            continuation.yield()
        }
        watcher.start()
        defer { watcher.stop() }
        var iterator = changes.makeAsyncIterator()
        // The first call comes once the watch is set up.
        _ = await iterator.next()
        #expect(watcher.mode == .inotify)
        // A change is reported well before the 60 s poll would notice it.
        let clock = ContinuousClock()
        let start = clock.now
        try directory.write("web", "127.0.0.1 8080\n")
        _ = await iterator.next()
        #expect(clock.now - start < .seconds(30))
    }
}
