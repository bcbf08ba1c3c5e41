@testable import MeshConfig
@testable import MeshDiscovery
@testable import MeshHTTP1
@testable import MeshProxy
@testable import MeshRouting
import MeshCore
import MeshTelemetry
import NIOCore
import NIOEmbedded
import Testing

/// State that must go when its owner goes: timers of closed connections, endpoint sets of names
/// nobody routes to any more.
@Suite struct LifetimeTests {
    static func listenerContext(_ configure: (inout ServerConfig) -> Void = { _ in }) -> ListenerContext {
        var server = ServerConfig(defaultPort: 0)
        configure(&server)
        var routerConfig = RouterConfig()
        routerConfig.servers = [server]
        let metrics = MeshMetrics()
        let router = Router(config: routerConfig, namers: NamerSet(configured: []), metrics: metrics, upstreams: HTTP1Upstream())
        return ListenerContext(
            router: router, config: server,
            limits: RequestLimits(maxInitialLineBytes: 4096, maxHeaderBytes: 8192, maxCallDepth: 10),
            metrics: metrics.server(router: "http", server: "test")
        )
    }

    /// A connection's lifetime timer (`serverSession.lifeTimeMs`) held its handler until it fired,
    /// long after the connection had closed.
    @Test func aClosedConnectionLetsGoOfItsHandler() throws {
        weak var released: ProxyServerHandler?
        let loop = EmbeddedEventLoop()
        do {
            let context = Self.listenerContext { server in
                server.serverSession.lifeTimeMs = 3_600_000
                server.serverSession.idleTimeMs = 3_600_000
            }
            let channel = EmbeddedChannel(loop: loop)
            let handler = ProxyServerHandler(listener: context, encoder: ResponseEncoder())
            released = handler
            try channel.pipeline.syncOperations.addHandler(handler)
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
            _ = try channel.finish()
        }
        #expect(released == nil, "a timer of the closed connection still holds its handler")
        try loop.syncShutdownGracefully()
    }

    /// `/$/inet` names come from Host headers: their endpoint sets live while something routes
    /// to them, and the map behind them does not keep one per name ever seen.
    @Test func inetEndpointSetsGoWithTheirUsers() throws {
        let namers = NamerSet(configured: [])
        var held: [NameTree<NamerResult<BoundName>>] = []
        for index in 0..<10_000 {
            let tree = try namers.lookup(Path(segments: ["$", "inet", "10.0.\(index / 250).\(index % 250)", "80"]))
            if index < 10 { held.append(tree) }
        }
        let counts = namers.inetCacheCounts
        #expect(counts.live == 10)
        #expect(counts.stored < 200, "dead entries are swept: \(counts.stored)")
        // The same name gives the same live set.
        guard case .leaf(.bound(let first)) = held[0], case .leaf(.bound(let again)) = try namers.lookup(Path(segments: ["$", "inet", "10.0.0.0", "80"])) else {
            Issue.record("expected bound names")
            return
        }
        #expect(first.addr === again.addr)
    }

    /// A transformer's derived set follows its original while used, and goes when unused.
    @Test func derivedEndpointSetsFollowTheirOriginalAndGo() {
        let transformers = NameTransformers([.port(4141)])
        let original = Watchable<Addr>(.bound([Endpoint(host: "10.0.0.1", port: 80)]))
        let bound = BoundName(id: Path(segments: ["#", "io.l5d.fs", "web"]), residual: .empty, addr: original)
        weak var derivedSet: Watchable<Addr>?
        do {
            let tree = try? transformers.apply(.leaf(bound)) { _ throws(DelegationError) in .neg }
            guard case .leaf(let derived)? = tree else {
                Issue.record("expected a derived name")
                return
            }
            derivedSet = derived.addr
            #expect(derived.id.description == "/%/io.l5d.port/4141/#/io.l5d.fs/web")
            original.set(.bound([Endpoint(host: "10.0.0.2", port: 80)]))
            #expect(derived.addr.value.endpoints == [Endpoint(host: "10.0.0.2", port: 4141)])
        }
        #expect(derivedSet == nil, "nobody uses the derived set, so it must be gone")
        original.set(.bound([Endpoint(host: "10.0.0.3", port: 80)]))
    }

    /// A derived set keeps its original alive: the original of a `/$/inet` name is otherwise
    /// held by nobody once bound, and its host-name lookup would be skipped.
    @Test func aDerivedSetKeepsItsOriginalAlive() {
        let transformers = NameTransformers([.port(4141)])
        weak var originalSet: Watchable<Addr>?
        var derivedSet: Watchable<Addr>?
        do {
            let original = Watchable<Addr>(.pending)
            originalSet = original
            let bound = BoundName(id: Path(segments: ["$", "inet", "web.internal", "80"]), residual: .empty, addr: original)
            if case .leaf(let derived)? = try? transformers.apply(.leaf(bound), bindConcrete: { _ throws(DelegationError) in .neg }) {
                derivedSet = derived.addr
            }
        }
        #expect(originalSet != nil, "the original went while its derived set lives")
        originalSet?.set(.bound([Endpoint(host: "10.0.0.9", port: 80)]))
        #expect(derivedSet?.value.endpoints == [Endpoint(host: "10.0.0.9", port: 4141)])
        derivedSet = nil
        #expect(originalSet == nil)
    }
}
