// The fuzz targets: each takes arbitrary bytes and drives one input path of meshd as a hostile
// peer would, checking what must hold for any input (no crash, no trap, no hang past the work
// bounds, and the oracles each target states). `main.swift` hands them to libFuzzer in a fuzzing
// build and replays saved inputs in a normal one (docs/fuzzing.md).

@testable import MeshConfig
import MeshCore
@testable import MeshDiscovery
@testable import MeshHTTP1
@testable import MeshRouting
import Foundation
import MeshTelemetry
import NIOCore
import NIOEmbedded
import NIOHTTP1

enum FuzzTarget: String, CaseIterable {
    /// Raw client bytes through NIO's request decoder and meshd's server handler: validation,
    /// identification, per-request dtabs and deadlines, routing, the exchange, the response.
    case requestHead = "request-head"
    /// Upstream bytes through meshd's response parser, whole and split at every point.
    case responseParser = "response-parser"
    /// Dtab, name-tree and path text, printed and read back, then delegated within the budget.
    case dtab
    /// YAML text through the config loader.
    case config
    /// `l5d-ctx-deadline`, `l5d-dtab` and `l5d-ctx-dtab` values.
    case contextHeaders = "context-headers"

    func run(_ data: [UInt8]) {
        switch self {
        case .requestHead: RequestHeadTarget.shared.run(data)
        case .responseParser: ResponseParserTarget.run(data)
        case .dtab: DtabTarget.run(data)
        case .config: ConfigTarget.run(data)
        case .contextHeaders: ContextHeadersTarget.run(data)
        }
    }
}

/// Stops the process with a message libFuzzer reports as a crash: an oracle did not hold.
func fuzzCheck(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String) {
    if !condition() { fatalError("fuzz oracle failed: \(message())") }
}

// MARK: request head

/// A namer whose every name binds to an empty endpoint set: requests get as far as the exchange
/// and its pick, and never touch the network.
final class EmptyNamer: Namer {
    let kind = "fuzz"
    let prefix = Path(segments: ["fuzz"])
    let generation = Watchable<UInt64>(0)
    private let empty = Watchable<Addr>(.bound([]))

    func lookup(_ path: Path) -> NameTree<BoundName> {
        guard let first = path.segments.first else { return .neg }
        return .leaf(BoundName(id: prefix + Path(segments: [first]), residual: path.dropFirst(1), addr: empty))
    }

    func state() -> NamerState { NamerState(kind: kind, prefix: prefix, names: [:]) }
}

final class RequestHeadTarget {
    // libFuzzer and the replayer call targets from one thread only.
    nonisolated(unsafe) static let shared = RequestHeadTarget()

    /// One listener per identifier kind (the first input byte picks one), half of them clearing
    /// context headers.
    private let listeners: [ListenerContext]
    private let loop = EmbeddedEventLoop()
    /// MESHD_FUZZ_VERBOSE=1 prints what meshd answered (for looking at a saved input).
    static let verbose = ProcessInfo.processInfo.environment["MESHD_FUZZ_VERBOSE"] != nil

    private init() {
        let metrics = MeshMetrics(seriesLimit: 50)
        let namers = NamerSet(configured: [EmptyNamer()])
        let identifiers: [[IdentifierConfig]] = [
            [.default],
            [.methodAndHost(httpUriInDst: true)],
            [.path(segments: 2, consume: true)],
            [.headerPath(header: "x-route")],
            [.headerToken(header: "x-name"), .default],
        ]
        var listeners: [ListenerContext] = []
        for (index, kinds) in identifiers.enumerated() {
            var server = ServerConfig(defaultPort: 0)
            server.clearContext = index % 2 == 1
            server.timeoutMs = 1000
            server.maxConcurrentRequests = 100
            var config = RouterConfig()
            config.label = "fuzz\(index)"
            config.identifiers = kinds
            config.dtab = (try? Dtab.read("/svc=>/#/fuzz;/svc/a=>/$/nil;/svc/b=>/$/fail;/svc/c=>/svc/c/x|/#/fuzz/c")) ?? .empty
            config.bindingCache.paths = 20
            config.bindingCache.clients = 5
            config.servers = [server]
            let router = Router(config: config, namers: namers, metrics: metrics, upstreams: HTTP1Upstream())
            listeners.append(ListenerContext(
                router: router, config: server,
                limits: RequestLimits(maxInitialLineBytes: 4096, maxHeaderBytes: 8192, maxCallDepth: 10),
                metrics: metrics.server(router: config.label, server: "fuzz")
            ))
        }
        self.listeners = listeners
    }

    func run(_ data: [UInt8]) {
        guard let selector = data.first else { return }
        let bytes = Array(data.dropFirst())
        let channel = EmbeddedChannel(loop: loop)
        let encoder = ResponseEncoder()
        let handler = ProxyServerHandler(listener: listeners[Int(selector) % listeners.count], encoder: encoder)
        var limits = NIOHTTPDecoderLimitConfiguration()
        limits.maxHeaderFieldSize = 64 * 1024
        limits.maxHeaderListSize = 72 * 1024
        do {
            try channel.pipeline.syncOperations.addHandlers([
                RequestBytesObserver(handler: handler), encoder,
                ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes, limitConfiguration: limits)), handler,
            ])
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        } catch {
            fatalError("fuzz set-up failed: \(error)")
        }
        // The bytes arrive in two reads, split where the selector says.
        let split = bytes.isEmpty ? 0 : Int(selector) * 7 % (bytes.count + 1)
        for piece in [bytes[..<split], bytes[split...]] where !piece.isEmpty {
            var buffer = channel.allocator.buffer(capacity: piece.count)
            buffer.writeBytes(piece)
            _ = try? channel.writeInbound(buffer)
        }
        // Timers (head timeouts, deadlines) fire; then the client goes away.
        loop.advanceTime(by: .seconds(30))
        var responses = 0
        while let part = try? channel.readOutbound(as: IOData.self) {
            guard case .byteBuffer(let buffer) = part else { continue }
            if Self.verbose { FileHandle.standardError.write(Data(buffer.readableBytesView)) }
            if buffer.readableBytesView.starts(with: "HTTP/1.".utf8) { responses += 1 }
        }
        _ = try? channel.finish(acceptAlreadyClosed: true)
        loop.run()
        fuzzCheck(responses <= max(1, bytes.count / 16 + 1), "\(responses) responses for \(bytes.count) bytes")
    }
}

// MARK: response parser

enum ResponseParserTarget {
    /// What a parse produced, comparable across splits.
    struct Outcome: Equatable {
        var heads: [String] = []
        var body: [UInt8] = []
        var ends = 0
        var failed = false
    }

    static func parse(_ pieces: [ArraySlice<UInt8>], methods: [HTTPMethod], closeAtEnd: Bool) -> Outcome {
        var parser = ResponseParser()
        for method in methods { parser.requestSent(method) }
        var outcome = Outcome()
        var events: [ResponseParser.Event] = []
        func collect() {
            for event in events {
                switch event {
                case .head(let head, let keepAlive): outcome.heads.append("\(head.status.code) \(head.headers.count) \(keepAlive)")
                case .body(let buffer): outcome.body.append(contentsOf: buffer.readableBytesView)
                case .end: outcome.ends += 1
                }
            }
            events.removeAll()
        }
        let allocator = ByteBufferAllocator()
        do {
            for piece in pieces {
                var buffer = allocator.buffer(capacity: piece.count)
                buffer.writeBytes(piece)
                try parser.feed(buffer, into: &events)
                collect()
            }
            if closeAtEnd {
                try parser.closed(into: &events)
                collect()
            }
        } catch {
            collect()
            outcome.failed = true
        }
        return outcome
    }

    static func run(_ data: [UInt8]) {
        guard data.count >= 1 else { return }
        // The first byte picks the methods of the requests sent (GET or HEAD, one to three).
        let selector = data[0]
        let methods = (0..<(Int(selector & 3) + 1)).map { $0 < 2 && selector & (0x10 << $0) != 0 ? HTTPMethod.HEAD : .GET }
        let bytes = Array(data.dropFirst())
        let closeAtEnd = selector & 0x80 != 0
        let whole = parse([bytes[...]], methods: methods, closeAtEnd: closeAtEnd)
        fuzzCheck(whole.body.count <= bytes.count, "more body bytes than input")
        fuzzCheck(whole.ends <= whole.heads.count, "an end without a head")
        // Oracle: where the bytes are split must not change what is parsed, up to the point of
        // failure (a failure may be found in a later piece, so only successes are compared whole).
        let splits = bytes.count <= 128 ? Array(0...bytes.count) : stride(from: 0, through: bytes.count, by: bytes.count / 32).map { $0 }
        for split in splits {
            let pieces = [bytes[..<split], bytes[split...]]
            let outcome = parse(pieces, methods: methods, closeAtEnd: closeAtEnd)
            fuzzCheck(outcome.failed == whole.failed, "split at \(split) changed failure: \(outcome.failed) vs \(whole.failed)")
            if !whole.failed { fuzzCheck(outcome == whole, "split at \(split) changed the parse: \(outcome) vs \(whole)") }
        }
        // Byte by byte, for small inputs.
        if bytes.count <= 128 {
            let outcome = parse(bytes.indices.map { bytes[$0...$0] }, methods: methods, closeAtEnd: closeAtEnd)
            fuzzCheck(outcome.failed == whole.failed, "byte-by-byte changed failure")
            if !whole.failed { fuzzCheck(outcome == whole, "byte-by-byte changed the parse") }
        }
    }
}

// MARK: dtab

enum DtabTarget {
    static let names = [Path(segments: ["svc", "a"]), Path(segments: ["svc", "b", "c"]), Path.empty, Path(segments: ["x"])]

    static func lookup(_ path: Path) throws(DelegationError) -> NameTree<NamerResult<String>> {
        guard let first = path.segments.first else { return .neg }
        switch first {
        case "#":
            return path.count >= 3 ? .leaf(.bound(Path(segments: Array(path.segments.prefix(3))).description)) : .neg
        case "$":
            guard path.count >= 2 else { return .neg }
            switch path.segments[1] {
            case "fail": return .fail
            case "nil": return .empty
            default:
                if let rewritten = RewritingNamers.lookup(path.segments[1], path.dropFirst(2)) { return rewritten.map { .path($0) } }
                throw .namerFailed(path: path, reason: "unknown")
            }
        default:
            return .neg
        }
    }

    static func run(_ data: [UInt8]) {
        let text = String(decoding: data, as: UTF8.self)
        if let dtab = try? Dtab.read(text) {
            // Oracle: what meshd prints, it reads back as the same dtab.
            let printed = dtab.description
            guard let reread = try? Dtab.read(printed) else { fatalError("fuzz oracle failed: printed dtab does not parse: \(printed)") }
            fuzzCheck(reread == dtab, "dtab round trip changed it: \(printed)")
            let delegator = Delegator<String>(dtab: dtab, namers: lookup)
            for name in names {
                _ = try? delegator.bind(name)
                _ = delegator.delegate(name)
            }
        }
        if let tree = try? NameTree<Path>.read(text) {
            guard let reread = try? NameTree<Path>.read(tree.description) else { fatalError("fuzz oracle failed: printed tree does not parse: \(tree)") }
            fuzzCheck(reread == tree, "tree round trip changed it: \(tree)")
            _ = tree.simplified
        }
        if let path = try? Path.read(text) {
            fuzzCheck((try? Path.read(path.description)) == path, "path round trip changed it: \(path)")
        }
    }
}

// MARK: config

enum ConfigTarget {
    static func run(_ data: [UInt8]) {
        let text = String(decoding: data, as: UTF8.self)
        do {
            let config = try ConfigLoader.parse(text, file: "fuzz.yaml")
            _ = config.json
        } catch {
            for problem in error.errors {
                fuzzCheck(problem.line >= 0 && problem.column >= 0, "an error without a place: \(problem)")
                fuzzCheck(!problem.message.isEmpty, "an error without a message")
            }
        }
    }
}

// MARK: context headers

enum ContextHeadersTarget {
    static func run(_ data: [UInt8]) {
        let lines = String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if case .success(let deadline?) = Deadline.read(lines) {
            for now: Int64 in [.min, -1, 0, 1_700_000_000_000_000_000, .max] {
                let remaining = deadline.remaining(now: now)
                let overdue = deadline.overdue(now: now)
                fuzzCheck((remaining == 0) || overdue == nil, "a deadline both pending and passed")
                for within: UInt64 in [0, 1_000_000_000, .max] {
                    if let passed = Deadline.passOn(deadline, within: within, now: now) {
                        fuzzCheck(passed.deadline <= deadline.deadline, "passing on loosened the deadline")
                    }
                }
                _ = deadline.headerValue(now: now)
            }
        }
        var headers = HTTPHeaders()
        for (index, line) in lines.prefix(16).enumerated() {
            // Header values cannot hold CR, LF or NUL (the decoder refuses them); the rest can.
            guard !line.utf8.contains(where: { $0 == 0 || $0 == 13 || $0 == 10 }) else { continue }
            headers.add(name: index % 2 == 0 ? "l5d-dtab" : "l5d-ctx-dtab", value: line)
        }
        if case .success(let dtab) = MessageRewriting.localDtab(headers), !dtab.isEmpty {
            let reread = Result { try Dtab.read(dtab.description) }
            fuzzCheck((try? reread.get()) == dtab, "the dtab passed on does not read back: \(dtab.description) -> \(reread)")
        }
    }
}
