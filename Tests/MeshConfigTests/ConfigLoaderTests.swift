import MeshConfig
import MeshCore
import Testing

@Suite struct ConfigLoaderTests {
    func errors(_ yaml: String) -> [ConfigError] {
        do {
            _ = try ConfigLoader.parse(yaml, file: "t.yaml")
            return []
        } catch {
            return error.errors
        }
    }

    @Test func minimalConfigGetsLinkerdDefaults() throws {
        let config = try ConfigLoader.parse("routers:\n- protocol: http\n  servers:\n  - {}\n", file: "t.yaml")
        #expect(config.admin.ip == "127.0.0.1")
        #expect(config.admin.port == 9990)
        #expect(config.admin.shutdownGraceMs == 10_000)
        let router = config.routers[0]
        #expect(router.label == "http")
        #expect(router.dstPrefix == Path("svc"))
        #expect(router.identifiers == [.headerToken(header: "Host")])
        #expect(router.servers[0].ip == "127.0.0.1")
        #expect(router.servers[0].port == 4140)
        #expect(router.maxInitialLineKB == 4 && router.maxHeadersKB == 8)
        #expect(router.client.base.hostConnectionPool.maxSize == 2_147_483_647)
        #expect(router.client.base.hostConnectionPool.maxWaiters == 2_147_483_647)
        #expect(router.client.base.hostConnectionPool.minSize == 0)
        #expect(router.client.base.hostConnectionPool.idleTimeMs == nil)
        #expect(router.client.base.loadBalancer == .p2c(maxEffort: 5))
        #expect(router.bindingCache.paths == 1000 && router.bindingCache.idleTtlSecs == 600)
    }

    @Test func configJSONCarriesTheDefaults() throws {
        let config = try ConfigLoader.parse("routers:\n- protocol: http\n  servers:\n  - port: 4141\n", file: "t.yaml")
        let json = config.json
        #expect(json["admin"]?["port"] == .int(9990))
        guard case .array(let routers)? = json["routers"] else { Issue.record("no routers"); return }
        #expect(routers[0]["client"]?["hostConnectionPool"]?["maxWaiters"] == .int(2_147_483_647))
        #expect(routers[0]["identifier"]?["kind"] == .string("io.l5d.header.token"))
        #expect(json.serialized().contains("\"dstPrefix\":\"/svc\""))
    }

    @Test func unknownKeySuggestsTheRightOne() {
        let found = errors("""
            routers:
            - protocol: http
              servers:
              - prot: 4140
            """)
        #expect(found.count == 1)
        #expect(found[0].line == 4 && found[0].column == 5)
        #expect(found[0].keyPath == "routers[0].servers[0].prot")
        #expect(found[0].message.contains("did you mean 'port'?"))
        #expect(found[0].description.hasPrefix("t.yaml:4:5: routers[0].servers[0].prot: unknown key 'prot'"))
    }

    @Test func everyProblemIsReportedAtOnce() {
        let found = errors("""
            admin:
              port: http
            namers:
            - kind: io.l5d.fs
            - kind: io.l5d.consul
            routers:
            - protocol: h2
              servers: [{port: 4142}]
            - protocol: http
              dtab: /svc => ;
              servers:
              - port: 70000
            """)
        let paths = found.map(\.keyPath)
        #expect(paths.contains("admin.port"))
        #expect(paths.contains("namers[0].rootDir"))
        #expect(paths.contains("namers[1].kind"))
        #expect(paths.contains("routers[0].protocol"))
        #expect(paths.contains("routers[1].dtab"))
        #expect(paths.contains("routers[1].servers[0].port"))
        #expect(found.count == 6)
        let consul = found.first { $0.keyPath == "namers[1].kind" }!
        #expect(consul.message.contains("Linkerd 1.x namer that meshd does not support"))
        #expect(consul.message.contains("'io.l5d.fs'"))
        #expect(consul.line == 5)
        let h2 = found.first { $0.keyPath == "routers[0].protocol" }!
        #expect(h2.message.contains("'h2'") && h2.message.contains("'http'"))
    }

    @Test func dtabErrorPointsIntoTheBlockScalar() {
        let found = errors("""
            routers:
            - protocol: http
              dtab: |
                /svc => /#/io.l5d.fs;
                /web => /svc/web &;
              servers: [{}]
            """)
        #expect(found.count == 1)
        #expect(found[0].keyPath == "routers[0].dtab")
        #expect(found[0].line == 5)
        #expect(found[0].column == 23)
        #expect(found[0].message.contains("^"))
    }

    @Test func dtabErrorOnOneLinePointsAtTheColumn() {
        let found = errors("routers:\n- protocol: http\n  dtab: /svc => /a &\n  servers: [{}]\n")
        #expect(found.count == 1)
        #expect(found[0].line == 3)
        // Just past the trailing '&', where a tree was expected.
        #expect(found[0].column == 21)
    }

    @Test func missingRoutersAndEmptyFile() {
        #expect(errors("admin: {port: 9991}\n").map(\.keyPath) == ["routers"])
        #expect(errors("").first?.message.contains("empty") == true)
    }

    @Test func wrongTypesSayWhatWasFound() {
        let found = errors("routers:\n- protocol: http\n  servers: {port: 1}\n")
        #expect(found.first?.message == "expected a list, found a mapping")
    }

    @Test func invalidYAMLGivesALine() {
        let found = errors("routers:\n- protocol: http\n  servers: [\n")
        #expect(found.count == 1)
        #expect(found[0].line >= 3)
        #expect(found[0].message.hasPrefix("invalid YAML"))
    }

    @Test func duplicateLabelsAndListenerConflicts() {
        let found = errors("""
            routers:
            - protocol: http
              servers: [{port: 4140}]
            - protocol: http
              servers: [{ip: 0.0.0.0, port: 4140}]
            """)
        #expect(found.contains { $0.message.contains("router label 'http' is already used") })
        #expect(found.contains { $0.message.contains("conflicts with the listener") })
    }

    @Test func linkerdKeysMeshdDoesNotImplementAreNamed() {
        let found = errors("""
            routers:
            - protocol: http
              httpAccessLog: /tmp/x
              servers:
              - port: 4140
                announce: [/#/io.l5d.serversets/web]
            """)
        #expect(found.count == 2)
        #expect(found.allSatisfy { $0.message.contains("not supported by meshd") })
    }

    @Test func tlsBlocksAreReadWithTheirDefaultsAndOrigins() throws {
        let config = try ConfigLoader.parse("""
            routers:
            - protocol: http
              servers:
              - port: 4141
                tls:
                  certPath: /c.pem
                  keyPath: /k.pem
                  caCertPath: /ca.pem
                  requireClientAuth: true
              - port: 4142
                tls: {enabled: false, certPath: /c.pem, keyPath: /k.pem}
              client:
                kind: io.l5d.static
                configs:
                - prefix: /#/io.l5d.fs/{service}
                  tls:
                    commonName: "{service}.mesh"
                    trustCerts: [/ca.pem]
                    protocols: [TLSv1.3]
                    clientAuth: {certPath: /cc.pem, keyPath: /ck.pem}
            """, file: "m.yaml")
        let server = try #require(config.routers[0].servers[0].tls)
        #expect(server.certPath.path == "/c.pem")
        #expect(server.certPath.origin.line == 6)
        #expect(server.certPath.origin.keyPath == "routers[0].servers[0].tls.certPath")
        #expect(server.requireClientAuth)
        #expect(server.protocols == [.tls12, .tls13])
        #expect(config.routers[0].servers[1].tls == nil)
        let web = config.routers[0].client.params(for: Path("#", "io.l5d.fs", "web"))
        let tls = try #require(web.tls)
        #expect(tls.commonName == "web.mesh")
        #expect(tls.protocols == [.tls13])
        #expect(tls.clientAuth?.keyPath.path == "/ck.pem")
        #expect(config.routers[0].client.params(for: Path("$", "inet", "1.2.3.4", "80")).tls == nil)
    }

    @Test func tlsMistakesAreNamed() {
        let found = errors("""
            routers:
            - protocol: http
              servers:
              - port: 4141
                tls: {certPath: /c.pem, protocols: [TLSv1, TLSv1.2, TLSv9], requireClientAuth: true}
              client:
                tls: {commonName: "{service}.mesh", trustCerts: [""]}
            """)
        let messages = found.map(\.message)
        #expect(messages.contains { $0.contains("missing required key 'keyPath'") })
        #expect(messages.contains { $0.contains("TLSv1 is not supported") })
        #expect(messages.contains { $0.contains("'TLSv9' is not a TLS version") })
        #expect(messages.contains { $0.contains("missing required key 'caCertPath'") })
        #expect(messages.contains { $0.contains("{service}") && $0.contains("not captured") })
        #expect(messages.contains { $0.contains("expected a file path") })
        #expect(found.allSatisfy { $0.line > 0 })
    }

    @Test func identifiersAsListAndEachKind() throws {
        let config = try ConfigLoader.parse("""
            routers:
            - protocol: http
              identifier:
              - kind: io.l5d.path
                segments: 2
                consume: true
              - kind: io.l5d.methodAndHost
              - kind: io.l5d.header
              - kind: io.l5d.static
                path: /web
              servers: [{}]
            """, file: "t.yaml")
        #expect(config.routers[0].identifiers == [
            .path(segments: 2, consume: true), .methodAndHost(httpUriInDst: false), .headerPath(header: "l5d-name"), .staticPath(Path("web")),
        ])
    }

    @Test func staticClientConfigAppliesMatchingEntriesInOrder() throws {
        let config = try ConfigLoader.parse("""
            routers:
            - protocol: http
              client:
                kind: io.l5d.static
                configs:
                - prefix: /#/io.l5d.fs
                  loadBalancer: {kind: ewma, decayTimeMs: 2000}
                  failureAccrual:
                    kind: io.l5d.successRate
                    successRate: 0.9
                    requests: 20
                    backoff: {kind: constant, ms: 10000}
                - prefix: /#/io.l5d.fs/{service}/slow
                  failFast: true
                - prefix: /$/inet/*/80
                  hostConnectionPool: {maxSize: 3}
              servers: [{}]
            """, file: "t.yaml")
        let client = config.routers[0].client
        let web = client.params(for: try Path.read("/#/io.l5d.fs/web"))
        #expect(web.loadBalancer == .ewma(maxEffort: 5, decayNanos: 2_000_000_000))
        #expect(web.failureAccrual.policy == .successRate(rate: 0.9, requests: 20))
        #expect(web.failureAccrual.backoff == .constant(nanoseconds: 10_000_000_000))
        #expect(web.failFast == false)
        let slow = client.params(for: try Path.read("/#/io.l5d.fs/web/slow"))
        #expect(slow.failFast == true && slow.loadBalancer == web.loadBalancer)
        let inet = client.params(for: try Path.read("/$/inet/127.0.0.1/80"))
        #expect(inet.hostConnectionPool.maxSize == 3 && inet.loadBalancer == .p2c(maxEffort: 5))
        #expect(client.params(for: try Path.read("/$/inet/127.0.0.1/81")).hostConnectionPool.maxSize == 2_147_483_647)
    }

    @Test func serviceConfigPerPrefix() throws {
        let config = try ConfigLoader.parse("""
            routers:
            - protocol: http
              service:
                kind: io.l5d.static
                configs:
                - prefix: /svc
                  totalTimeoutMs: 2000
                  responseClassifier: {kind: io.l5d.http.retryableRead5XX}
                  retries:
                    budget: {minRetriesPerSec: 5, percentCanRetry: 0.5}
                    backoff: {kind: jittered, minMs: 10, maxMs: 100}
                - prefix: /svc/payments
                  responseClassifier: {kind: io.l5d.nonRetryable5XX}
                  retryBufferSize: {requestBytes: 1024, responseBytes: 9}
              servers: [{}]
            """, file: "t.yaml")
        let service = config.routers[0].service
        let web = service.params(for: try Path.read("/svc/web"))
        #expect(web.totalTimeoutMs == 2000 && web.responseClassifier == .retryableRead5XX)
        #expect(web.retries.budget.minRetriesPerSec == 5 && web.retries.budget.percentCanRetry == 0.5 && web.retries.budget.ttlSecs == 10)
        #expect(web.retries.backoff == .decorrelatedJittered(min: 10_000_000, max: 100_000_000))
        let payments = service.params(for: try Path.read("/svc/payments/charge"))
        #expect(payments.responseClassifier == .nonRetryable5XX && payments.totalTimeoutMs == 2000 && payments.retryBufferBytes == 1024)
        #expect(ServiceConfig().params(for: Path("svc")).responseClassifier == .nonRetryable5XX)
    }

    @Test func failureAccrualAndBalancerErrorsAreNamed() {
        let found = errors("""
            routers:
            - protocol: http
              client:
                loadBalancer: {kind: aperture, lowLoad: 3, highLoad: 1}
                failureAccrual:
                  kind: io.l5d.successRate
                  backoff: {kind: jittered, minMs: 10}
              servers: [{}]
            """)
        let paths = Set(found.map(\.keyPath))
        #expect(paths.contains("routers[0].client.loadBalancer"))
        #expect(paths.contains("routers[0].client.failureAccrual.successRate"))
        #expect(paths.contains("routers[0].client.failureAccrual.requests"))
        #expect(paths.contains("routers[0].client.failureAccrual.backoff.maxMs"))
    }
}
