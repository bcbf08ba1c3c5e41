@testable import MeshHTTP1
@testable import MeshProxy
@testable import MeshRouting
import MeshConfig
import MeshCore
import NIOHTTP1
import Testing

/// Identifiers turn a request into a logical name under the router's `dstPrefix`, the first
/// that can winning; and `MessageRewriting` reads absolute-form targets, the request's own dtab,
/// and rewrites the heads that cross the proxy.
@Suite struct IdentifierTests {
    static let svc = Path("svc")

    // MARK: io.l5d.header.token

    @Test func aHeaderTokenIsOneSegmentAsItCame() throws {
        let identifier = Identifier(kinds: [.default], dstPrefix: Self.svc)
        #expect(try name(identifier, request(["Host": "Web.Example:8080"])) == Path("svc", "Web.Example:8080"))
        // Slashes do not split it.
        #expect(try name(identifier, request(["host": "a/b"])) == Path("svc", "a/b"))
        let custom = Identifier(kinds: [.headerToken(header: "x-name")], dstPrefix: Path("s", "t"))
        #expect(try name(custom, request(["X-Name": "users", "x-name": "second"])) == Path("s", "t", "users"))
    }

    @Test func aHeaderTokenNeedsItsHeaderWithAValue() {
        let identifier = Identifier(kinds: [.headerToken(header: "x-name")], dstPrefix: Self.svc)
        for headers: HTTPHeaders in [[:], ["x-name": ""], ["x-names": "a"]] {
            let error = failure(identifier, request(headers))
            #expect(error?.kind == .unidentified)
            #expect(error?.message == "no x-name header to route by")
            #expect(error?.status == .badRequest)
        }
    }

    // MARK: io.l5d.header

    @Test func aHeaderPathIsReadAsAPath() throws {
        let identifier = Identifier(kinds: [.headerPath(header: "l5d-name")], dstPrefix: Self.svc)
        #expect(try name(identifier, request(["L5d-Name": "/users/v1"])) == Path("svc", "users", "v1"))
        #expect(try name(identifier, request(["l5d-name": "/a\\x2fb"])) == Path("svc", "a/b"))
        #expect(try name(identifier, request(["l5d-name": "/"])) == Self.svc)
    }

    @Test func aHeaderPathMustBeAPath() {
        let identifier = Identifier(kinds: [.headerPath(header: "l5d-name")], dstPrefix: Self.svc)
        #expect(failure(identifier, request([:]))?.message == "no l5d-name header to route by")
        #expect(failure(identifier, request(["l5d-name": ""]))?.message == "no l5d-name header to route by")
        for value in ["users", "/a//b", "/a b", "/a/"] {
            let error = failure(identifier, request(["l5d-name": value]))
            #expect(error?.kind == .unidentified, "\(value)")
            #expect(error?.message.hasPrefix("l5d-name header is not a path: ") == true, "\(value): \(String(describing: error))")
        }
    }

    // MARK: io.l5d.methodAndHost

    @Test func methodAndHostNamesTheVersionMethodAndLowerCasedHost() throws {
        let identifier = Identifier(kinds: [.methodAndHost(httpUriInDst: false)], dstPrefix: Self.svc)
        #expect(try name(identifier, request(["Host": "Example.COM:80"], uri: "/a/b")) == Path("svc", "1.1", "GET", "example.com:80"))
        #expect(try name(identifier, request(["Host": "h"], method: .DELETE)) == Path("svc", "1.1", "DELETE", "h"))
        let withURI = Identifier(kinds: [.methodAndHost(httpUriInDst: true)], dstPrefix: Self.svc)
        #expect(try name(withURI, request(["Host": "h"], method: .POST, uri: "/a//b/?q=/x")) == Path("svc", "1.1", "POST", "h", "a", "b"))
        #expect(try name(withURI, request(["Host": "h"], uri: "/")) == Path("svc", "1.1", "GET", "h"))
    }

    /// HTTP/1.0 has no Host to rely on: the name leaves it out, whether or not one came.
    @Test func methodAndHostLeavesTheHostOutForHTTP10() throws {
        let identifier = Identifier(kinds: [.methodAndHost(httpUriInDst: true)], dstPrefix: Self.svc)
        #expect(try name(identifier, request([:], version: .http1_0, uri: "/x")) == Path("svc", "1.0", "GET", "x"))
        #expect(try name(identifier, request(["Host": "h"], version: .http1_0, uri: "/x")) == Path("svc", "1.0", "GET", "x"))
    }

    @Test func methodAndHostNeedsAHostForHTTP11() {
        let identifier = Identifier(kinds: [.methodAndHost(httpUriInDst: false)], dstPrefix: Self.svc)
        for headers: HTTPHeaders in [[:], ["Host": ""]] {
            #expect(failure(identifier, request(headers))?.message == "no Host header to route by")
        }
    }

    // MARK: io.l5d.path

    @Test func pathNamesTheFirstSegments() throws {
        let identifier = Identifier(kinds: [.path(segments: 2, consume: false)], dstPrefix: Self.svc)
        let identification = try identify(identifier, request(uri: "/users/v1/items?q=/a/b"))
        #expect(identification.name == Path("svc", "users", "v1"))
        #expect(identification.uri == nil, "nothing consumed")
        #expect(try name(identifier, request(uri: "//users///v1")) == Path("svc", "users", "v1"))
    }

    @Test func pathConsumesWhatItNamedFromTheForwardedURI() throws {
        let identifier = Identifier(kinds: [.path(segments: 1, consume: true)], dstPrefix: Self.svc)
        let cases: [(uri: String, name: Path, rest: String)] = [
            ("/users/v1/items?q=1", Path("svc", "users"), "/v1/items?q=1"),
            ("/users", Path("svc", "users"), "/"),
            ("/users/", Path("svc", "users"), "/"),
            ("/users/v1/", Path("svc", "users"), "/v1/"),
            ("/users?x=/y", Path("svc", "users"), "/?x=/y"),
            ("//users//v1", Path("svc", "users"), "/v1"),
        ]
        for (uri, name, rest) in cases {
            let identification = try identify(identifier, request(uri: uri))
            #expect(identification.name == name, "\(uri)")
            #expect(identification.uri == rest, "\(uri)")
        }
    }

    @Test func pathNeedsEnoughSegments() {
        let identifier = Identifier(kinds: [.path(segments: 2, consume: true)], dstPrefix: Self.svc)
        for uri in ["/", "/only", "/only/?a/b", "/only?x=/y/z", ""] {
            #expect(failure(identifier, request(uri: uri))?.message == "the request path has fewer than 2 segments to route by", "\(uri)")
        }
    }

    // MARK: io.l5d.static

    @Test func staticNamesEveryRequestTheSame() throws {
        let identifier = Identifier(kinds: [.staticPath(Path("fixed", "name"))], dstPrefix: Self.svc)
        #expect(try name(identifier, request(["Host": "a"], uri: "/x")) == Path("svc", "fixed", "name"))
        #expect(try name(identifier, request([:], version: .http1_0, method: .PUT, uri: "*")) == Path("svc", "fixed", "name"))
    }

    // MARK: several identifiers

    @Test func theFirstIdentifierThatNamesTheRequestWins() throws {
        let identifier = Identifier(kinds: [.headerToken(header: "x-name"), .path(segments: 1, consume: true), .staticPath(Path("fallback"))], dstPrefix: Self.svc)
        #expect(try name(identifier, request(["x-name": "token"], uri: "/path")) == Path("svc", "token"))
        let byPath = try identify(identifier, request(uri: "/path/rest"))
        #expect(byPath.name == Path("svc", "path"))
        #expect(byPath.uri == "/rest")
        #expect(try name(identifier, request(uri: "/")) == Path("svc", "fallback"))
    }

    @Test func whenNoneCanNameItTheReasonsAreAllGiven() {
        let identifier = Identifier(kinds: [.headerToken(header: "x-name"), .path(segments: 1, consume: false), .methodAndHost(httpUriInDst: false)], dstPrefix: Self.svc)
        let error = failure(identifier, HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: [:]))
        #expect(error?.kind == .unidentified)
        #expect(error?.message == "no x-name header to route by; the request path has fewer than 1 segments to route by; no Host header to route by")
    }

    // MARK: the fast key

    @Test func onlyALoneTokenOrStaticIdentifierHasAFastKey() {
        let head = request(["Host": "Web", "x-name": "n"], uri: "/a/b")
        #expect(Identifier(kinds: [.default], dstPrefix: Self.svc).fastKey(head) == "Web")
        #expect(Identifier(kinds: [.headerToken(header: "x-name")], dstPrefix: Self.svc).fastKey(head) == "n")
        #expect(Identifier(kinds: [.headerToken(header: "x-missing")], dstPrefix: Self.svc).fastKey(head) == nil)
        #expect(Identifier(kinds: [.staticPath(Path("a"))], dstPrefix: Self.svc).fastKey(head) == "")
        for kinds: [IdentifierConfig] in [
            [.headerPath(header: "x-name")], [.methodAndHost(httpUriInDst: false)], [.path(segments: 1, consume: false)],
            [.default, .staticPath(Path("a"))], [],
        ] {
            #expect(Identifier(kinds: kinds, dstPrefix: Self.svc).fastKey(head) == nil, "\(kinds)")
        }
    }

    // MARK: URI paths

    @Test func pathSegmentsIgnoreEmptySegmentsAndTheQuery() {
        let cases: [(String, [String])] = [
            ("/", []), ("", []), ("/a", ["a"]), ("/a/b/", ["a", "b"]), ("//a//b", ["a", "b"]),
            ("/a?b/c", ["a"]), ("/a/b?", ["a", "b"]), ("?/a", []), ("/a%2Fb", ["a%2Fb"]),
        ]
        for (uri, segments) in cases {
            #expect(Identifier.pathSegments(of: uri) == Path(segments: segments), "\(uri)")
        }
    }

    @Test func droppingSegmentsKeepsTheRestOfTheURI() {
        let cases: [(String, Int, String)] = [
            ("/a/b/c?q", 1, "/b/c?q"), ("/a/b/c", 2, "/c"), ("/a/b/c", 3, "/"), ("/a/b/c/", 3, "/"),
            ("/a/b/c/", 1, "/b/c/"), ("/a?", 1, "/?"), ("/a/b", 0, "/a/b"), ("/a?x=/b/c", 1, "/?x=/b/c"),
        ]
        for (uri, count, rest) in cases {
            #expect(Identifier.dropSegments(count, from: uri) == rest, "\(uri) minus \(count)")
        }
    }

    // MARK: absolute-form targets

    @Test func anAbsoluteFormTargetSplitsIntoAuthorityAndOriginForm() {
        let cases: [(String, String, String)] = [
            ("http://example.com/path?q=1", "example.com", "/path?q=1"),
            ("HTTP://Example.com:8080", "Example.com:8080", "/"),
            ("https://h.example?x=1", "h.example", "/?x=1"),
            ("hTTpS://a/", "a", "/"),
            ("http://user:pw@host:81/p", "host:81", "/p"),
            ("http://u@v@host/p", "host", "/p"),
            ("http://host/p@q", "host", "/p@q"),
            ("http://[::1]:80/x", "[::1]:80", "/x"),
            ("http://", "", "/"),
        ]
        for (uri, authority, target) in cases {
            let split = MessageRewriting.absoluteForm(uri)
            #expect(split?.authority == authority, "\(uri)")
            #expect(split?.target == target, "\(uri)")
        }
    }

    @Test func otherTargetsAreNotAbsoluteForm() {
        for uri in ["/path", "*", "", "h", "http", "http:/x", "http//a/", "httpx://a/", "ftp://a/", "HTTP:", "hxxp://a/"] {
            #expect(MessageRewriting.absoluteForm(uri) == nil, "\(uri)")
        }
    }

    // MARK: l5d headers

    @Test func removingL5dHeadersRemovesEveryOneInAnyCase() {
        var headers: HTTPHeaders = [
            "l5d-dtab": "/a=>/b", "X-A": "1", "L5D-CTX-DEADLINE": "1 2", "l5d-": "x", "L5d-Reqid": "r",
            "l5d": "kept", "x-l5d-dtab": "kept", "l5dx": "kept", "l5d-dtab": "/c=>/d",
        ]
        MessageRewriting.removeL5dHeaders(&headers)
        #expect(headers.map(\.name) == ["X-A", "l5d", "x-l5d-dtab", "l5dx"])
    }

    @Test func theRequestsDtabIsItsContextThenItsOverride() throws {
        let headers: HTTPHeaders = ["l5d-dtab": "/a=>/b", "l5d-ctx-dtab": "/c=>/d;/e=>/f", "L5D-DTAB": "/g=>/h"]
        let dtab = try MessageRewriting.localDtab(headers).get()
        let expected = try Dtab.read("/c=>/d;/e=>/f;/a=>/b;/g=>/h")
        #expect(dtab == expected)
        #expect(dtab.dentries.count == 4)
        #expect(try MessageRewriting.localDtab(["X": "1"]).get() == .empty)
    }

    @Test func anInvalidDtabHeaderIsABadRequest() {
        for (name, value) in [("l5d-dtab", "/a=>"), ("l5d-ctx-dtab", "nonsense")] {
            guard case .failure(let error) = MessageRewriting.localDtab([name: value]) else {
                Issue.record("\(name): \(value) was accepted")
                continue
            }
            #expect(error.kind == .badRequest)
            #expect(error.message.hasPrefix("invalid \(name) header: "), "\(error.message)")
            #expect(error.message.contains(" at character "), "\(error.message)")
        }
    }

    // MARK: responses to the client

    @Test func theClientsResponseLosesHopByHopHeadersAndGainsViaAndClassification() {
        let upstream = HTTPResponseHead(version: .http1_1, status: .ok, headers: [
            "Content-Type": "text/plain", "Connection": "close, X-Hop", "X-Hop": "1", "Keep-Alive": "timeout=5",
            "Transfer-Encoding": "chunked", "l5d-success-class": "0.5", "L5D-Retryable": "true", "l5d-other": "1",
        ])
        let head = MessageRewriting.downstreamResponse(from: upstream, clientVersion: .http1_1, keepAlive: true, clearContext: false, responseClass: .success)
        #expect(head.version == .http1_1)
        #expect(head.status == .ok)
        #expect(fields(head.headers) == ["Content-Type: text/plain", "l5d-other: 1", "via: 1.1 meshd", "l5d-success-class: 1.0"])
    }

    @Test func theClientsResponseSaysWhetherTheConnectionStays() {
        let upstream = HTTPResponseHead(version: .http1_1, status: .serviceUnavailable, headers: ["X-A": "1", "Via": "1.1 up"])
        let closing = MessageRewriting.downstreamResponse(
            from: upstream, clientVersion: .http1_1, keepAlive: false, clearContext: false, responseClass: .failure(retryable: true)
        )
        #expect(fields(closing.headers) == ["X-A: 1", "via: 1.1 up, 1.1 meshd", "connection: close", "l5d-success-class: 0.0", "l5d-retryable: true"])
        // An HTTP/1.0 client is told the connection stays, and gets a 1.0 response.
        let staying = MessageRewriting.downstreamResponse(
            from: upstream, clientVersion: .http1_0, keepAlive: true, clearContext: false, responseClass: .failure(retryable: false)
        )
        #expect(staying.version == .http1_0)
        #expect(fields(staying.headers) == ["X-A: 1", "via: 1.1 up, 1.1 meshd", "connection: keep-alive", "l5d-success-class: 0.0"])
    }

    @Test func aClearContextListenerSendsNoL5dHeaders() {
        let upstream = HTTPResponseHead(version: .http1_1, status: .ok, headers: ["X-A": "1", "l5d-err": "x", "L5D-Success-Class": "1.0", "l5d-retryable": "true"])
        let head = MessageRewriting.downstreamResponse(from: upstream, clientVersion: .http1_1, keepAlive: true, clearContext: true, responseClass: .failure(retryable: true))
        #expect(fields(head.headers) == ["X-A: 1", "via: 1.1 meshd"])
    }

    @Test func anInformationalResponseLosesOnlyHopByHopHeaders() {
        let interim = HTTPResponseHead(version: .http1_0, status: .continue, headers: ["Connection": "X-Hop", "X-Hop": "1", "X-A": "2", "l5d-x": "3"])
        let head = MessageRewriting.informationalResponse(from: interim)
        #expect(head.version == .http1_1)
        #expect(head.status == .continue)
        #expect(fields(head.headers) == ["X-A: 2", "l5d-x: 3"])
    }

    @Test func requestIDsAreSixteenLowerCaseHexDigitsOfTheNextRandomValue() {
        for seed: UInt64 in [0, 1, 42, .max] {
            var random = SplitMix64(seed: seed)
            var copy = random
            let id = MessageRewriting.requestID(&random)
            let value = copy.next()
            let hex = String(value, radix: 16)
            #expect(id == String(repeating: "0", count: 16 - hex.count) + hex, "seed \(seed)")
            #expect(random.next() == copy.next(), "one value was used")
        }
    }

    // MARK: helpers

    func request(
        _ headers: HTTPHeaders = [:], version: HTTPVersion = .http1_1, method: HTTPMethod = .GET, uri: String = "/"
    ) -> HTTPRequestHead {
        HTTPRequestHead(version: version, method: method, uri: uri, headers: headers)
    }

    func identify(_ identifier: Identifier, _ head: HTTPRequestHead) throws -> Identification {
        try identifier.identify(head, uri: head.uri).get()
    }

    func name(_ identifier: Identifier, _ head: HTTPRequestHead) throws -> Path {
        try identify(identifier, head).name
    }

    /// Why the request could not be named; nil (and an issue) if it was.
    func failure(_ identifier: Identifier, _ head: HTTPRequestHead, sourceLocation: SourceLocation = #_sourceLocation) -> ProxyError? {
        switch identifier.identify(head, uri: head.uri) {
        case .success(let identification):
            Issue.record("named \(identification.name)", sourceLocation: sourceLocation)
            return nil
        case .failure(let error):
            return error
        }
    }

    func fields(_ headers: HTTPHeaders) -> [String] {
        headers.map { "\($0.name): \($0.value)" }
    }
}
