@testable import MeshHTTP1
@testable import MeshProxy
@testable import MeshRouting
import NIOHTTP1
import Testing

/// `RequestValidator` and `HeaderRules`: which decoded request heads are refused before anything
/// is forwarded (smuggling-prone framing, limits, loops, expectations), the body framing decided
/// for the rest, and which headers stay on their hop.
@Suite struct RequestValidatorTests {
    static let limits = RequestLimits(maxInitialLineBytes: 4096, maxHeaderBytes: 8192, maxCallDepth: 10)

    // MARK: framing

    @Test func aRequestWithoutFramingHeadersHasNoBody() {
        #expect(framing(request(.GET)) == HeaderRules.RequestFraming.none)
        #expect(framing(request(.POST)) == HeaderRules.RequestFraming.none)
    }

    @Test func aContentLengthFramesTheBody() {
        #expect(framing(request(.POST, ["Content-Length": "5"])) == .contentLength(5))
        #expect(framing(request(.PUT, ["content-length": " 12\t"])) == .contentLength(12))
        #expect(framing(request(.POST, ["Content-Length": "0"])) == HeaderRules.RequestFraming.none)
        #expect(framing(request(.POST, ["Content-Length": "000"])) == HeaderRules.RequestFraming.none)
    }

    @Test func repeatedContentLengthsThatAgreeAreOne() {
        #expect(framing(request(.POST, ["Content-Length": "5, 5"])) == .contentLength(5))
        #expect(framing(request(.POST, ["Content-Length": "5", "CONTENT-LENGTH": " 5 "])) == .contentLength(5))
    }

    @Test func chunkedIsTheOnlyTransferCoding() {
        #expect(framing(request(.POST, ["Transfer-Encoding": "chunked"])) == .chunked)
        #expect(framing(request(.POST, ["transfer-encoding": " Chunked "])) == .chunked)
        for codings in [["gzip"], ["identity"], ["gzip, chunked"], ["chunked, chunked"], ["chunked,"], ["gzip", "chunked"], [""]] {
            var headers = HTTPHeaders()
            for coding in codings { headers.add(name: "Transfer-Encoding", value: coding) }
            let error = refusal(request(.POST, headers))
            #expect(error?.kind == .badRequest, "Transfer-Encoding \(codings)")
            #expect(error?.message.contains("only 'chunked' is accepted") == true, "Transfer-Encoding \(codings)")
        }
    }

    @Test func contentLengthWithTransferEncodingIsRefused() {
        for headers: HTTPHeaders in [
            ["Content-Length": "5", "Transfer-Encoding": "chunked"],
            ["Transfer-Encoding": "chunked", "Content-Length": "5"],
            ["Transfer-Encoding": "chunked", "Content-Length": "0"],
        ] {
            let error = refusal(request(.POST, headers))
            #expect(error?.kind == .badRequest)
            #expect(error?.message == "request has both Content-Length and Transfer-Encoding")
            #expect(error?.status == .badRequest)
        }
    }

    @Test func transferEncodingIsRefusedInHTTP10() {
        let error = refusal(request(.POST, ["Transfer-Encoding": "chunked"], version: .http1_0))
        #expect(error?.kind == .badRequest)
        #expect(error?.message == "Transfer-Encoding is not allowed in an HTTP/1.0 request")
        #expect(framing(request(.POST, ["Content-Length": "3"], version: .http1_0)) == .contentLength(3))
    }

    @Test func invalidContentLengthsAreRefused() {
        for value in ["abc", "-1", "+5", "", " ", "5 5", "0x10", "1.5", "99999999999999999999"] {
            let error = refusal(request(.POST, ["Content-Length": value]))
            #expect(error?.kind == .badRequest, "Content-Length '\(value)'")
            #expect(error?.message.hasPrefix("invalid Content-Length") == true, "Content-Length '\(value)': \(String(describing: error))")
        }
    }

    @Test func conflictingContentLengthsAreRefused() {
        for headers: HTTPHeaders in [
            ["Content-Length": "5", "Content-Length": "6"],
            ["Content-Length": "5, 6"],
            ["Content-Length": "5,"],
            ["Content-Length": "5", "Content-Length": "05"],
            ["Content-Length": "5", "Content-Length": "x"],
        ] {
            let error = refusal(request(.POST, headers))
            #expect(error?.kind == .badRequest, "\(headers)")
            #expect(error?.message == "request has conflicting Content-Length values", "\(headers)")
        }
    }

    @Test func aTRACEWithABodyIsRefused() {
        for headers: HTTPHeaders in [["Content-Length": "5"], ["Transfer-Encoding": "chunked"]] {
            let error = refusal(request(.TRACE, headers))
            #expect(error?.kind == .badRequest)
            #expect(error?.message == "a TRACE request must not have a body")
        }
        #expect(framing(request(.TRACE)) == HeaderRules.RequestFraming.none)
        #expect(framing(request(.TRACE, ["Content-Length": "0"])) == HeaderRules.RequestFraming.none)
    }

    // MARK: Host

    @Test func twoHostHeadersAreRefusedWhateverTheirCase() {
        for headers: HTTPHeaders in [["Host": "a", "Host": "a"], ["host": "a", "HOST": "b"], ["Host": "a", "X": "1", "hOsT": ""]] {
            let error = refusal(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: headers))
            #expect(error?.kind == .badRequest)
            #expect(error?.message == "request has 2 Host headers; send exactly one")
        }
        // None is not this validator's concern (identifiers decide what a missing Host means).
        #expect(framing(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: [:])) == HeaderRules.RequestFraming.none)
        #expect(framing(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: ["X-Host": "a", "Hosts": "b", "host": "c"])) == HeaderRules.RequestFraming.none)
    }

    // MARK: limits

    @Test func theRequestLineIsLimited() {
        // `GET SP uri SP HTTP/1.1` is counted: 3 + uri + 10.
        let fits = "/" + String(repeating: "a", count: Self.limits.maxInitialLineBytes - 14)
        #expect(framing(HTTPRequestHead(version: .http1_1, method: .GET, uri: fits, headers: ["host": "h"])) == HeaderRules.RequestFraming.none)
        let error = refusal(HTTPRequestHead(version: .http1_1, method: .GET, uri: fits + "a", headers: ["host": "h"]))
        #expect(error?.kind == .uriTooLong)
        #expect(error?.status == .uriTooLong)
        #expect(error?.message == "request line is 4097 bytes; the limit is 4096 (maxInitialLineKB)")
        // The method counts too.
        #expect(refusal(HTTPRequestHead(version: .http1_1, method: .OPTIONS, uri: fits, headers: ["host": "h"]))?.kind == .uriTooLong)
    }

    @Test func theHeaderSectionIsLimited() {
        // Each header counts its name, its value and 4 (": " and CRLF).
        var headers: HTTPHeaders = ["host": "h"]  // 9
        headers.add(name: "x-pad", value: String(repeating: "v", count: Self.limits.maxHeaderBytes - 9 - 9))
        #expect(framing(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: headers)) == HeaderRules.RequestFraming.none)
        headers.add(name: "x", value: "")
        let error = refusal(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: headers))
        #expect(error?.kind == .headersTooLarge)
        #expect(error?.status == .requestHeaderFieldsTooLarge)
        #expect(error?.message == "request headers are 8197 bytes; the limit is 8192 (maxHeadersKB)")
    }

    @Test func tooManyProxiesInViaIsALoop() {
        let ten = (1...10).map { "1.1 proxy\($0)" }
        #expect(framing(request(.GET, ["Via": ten.joined(separator: ", ")])) == HeaderRules.RequestFraming.none)
        for headers: HTTPHeaders in [
            ["Via": (ten + ["1.1 meshd"]).joined(separator: ", ")],
            // Several Via headers are one list.
            ["Via": ten.prefix(6).joined(separator: ","), "via": ten.suffix(4).joined(separator: ","), "VIA": "1.1 meshd"],
        ] {
            let error = refusal(request(.GET, headers))
            #expect(error?.kind == .loopDetected)
            #expect(error?.message.hasPrefix("request has passed 11 proxies (Via), more than maxCallDepth 10") == true)
        }
    }

    // MARK: Expect

    @Test func only100ContinueCanBeExpected() {
        #expect(RequestValidator.unmetExpectation(request(.POST)) == nil)
        for value in ["100-continue", "100-Continue", "100-CONTINUE, 100-continue"] {
            #expect(RequestValidator.unmetExpectation(request(.POST, ["Expect": value])) == nil, "Expect: \(value)")
        }
        for (headers, member) in [
            (["Expect": "200-ok"] as HTTPHeaders, "200-ok"),
            (["Expect": "100-continue, foo=bar"], "foo=bar"),
            (["Expect": "100-continue", "expect": "x"], "x"),
        ] {
            let error = RequestValidator.unmetExpectation(request(.POST, headers))
            #expect(error?.kind == .expectationFailed)
            #expect(error?.status == .expectationFailed)
            #expect(error?.message == "unsupported expectation 'Expect: \(member)'; only 100-continue is supported")
        }
    }

    // MARK: header facts

    @Test func factsNameTheHeadersOfInterest() {
        let cases: [(String, HeaderFacts)] = [
            ("Expect", .expect), ("EXPECT", .expect),
            ("Upgrade", [.upgrade, .hopByHop]),
            ("l5d-dtab", [.l5d, .dtab]), ("L5D-Dtab", [.l5d, .dtab]),
            ("l5d-ctx-dtab", [.l5d, .dtab]),
            ("l5d-ctx-deadline", [.l5d, .deadline]),
            ("l5d-dst-service", .l5d), ("l5d-", .l5d), ("L5d-x", .l5d),
            ("Via", .via),
            ("Content-Length", .contentLength),
            ("Connection", .hopByHop), ("Transfer-Encoding", .hopByHop), ("te", .hopByHop), ("Keep-Alive", .hopByHop),
            ("Trailer", .hopByHop), ("Proxy-Connection", .hopByHop), ("Proxy-Authenticate", .hopByHop), ("Proxy-Authorization", .hopByHop),
            ("l5dx-dtab", []), ("l5d", []), ("l6d-dtab", []), ("x-l5d-dtab", []), ("Vias", []), ("Expects", []), ("Host", []),
            ("l5d-dtabs", .l5d), ("content-lengths", []), ("tea", []),
        ]
        for (name, facts) in cases {
            #expect(HeaderFacts.of(name) == facts, "\(name)")
        }
    }

    @Test func validationReportsEveryFactItSaw() throws {
        let head = request(.GET, [
            "Expect": "100-continue", "Upgrade": "h2c", "Connection": "upgrade", "l5d-dtab": "/a=>/b",
            "l5d-ctx-deadline": "0 0", "Via": "1.1 a", "Content-Length": "0",
        ])
        let (framing, facts) = try RequestValidator.validate(head, limits: Self.limits).get()
        #expect(framing == .none)
        #expect(facts == [.expect, .upgrade, .hopByHop, .l5d, .dtab, .deadline, .via, .contentLength])
        #expect(try RequestValidator.validate(request(.GET, ["Accept": "*/*"]), limits: Self.limits).get().1 == [])
    }

    // MARK: hop-by-hop headers

    @Test func hopByHopHeadersAndThoseConnectionNamesAreRemoved() {
        var headers: HTTPHeaders = [
            "Connection": "close, X-Secret , x-other,,", "X-Secret": "s", "X-OTHER": "o", "Keep-Alive": "timeout=5",
            "TE": "trailers", "Trailer": "X-T", "Upgrade": "h2c", "Proxy-Connection": "keep-alive",
            "Proxy-Authorization": "Basic eA==", "Proxy-Authenticate": "Basic", "Transfer-Encoding": "chunked",
            "X-Keep": "k", "Connection": "keep-alive",
        ]
        let seen = HeaderRules.removeHopByHop(&headers)
        #expect(headers.map { "\($0.name): \($0.value)" } == ["X-Keep: k"])
        #expect(!seen.via)
        #expect(!seen.classification)
    }

    /// `Connection: content-length` once stripped the length of a body the next hop then did not
    /// expect; the framing and the Host are the message's.
    @Test func connectionCannotNameContentLengthOrHost() {
        var headers: HTTPHeaders = ["Connection": "Content-Length, HOST, X-A", "Content-Length": "5", "Host": "h", "X-A": "1"]
        HeaderRules.removeHopByHop(&headers)
        #expect(headers.map { "\($0.name): \($0.value)" } == ["Content-Length: 5", "Host: h"])
    }

    @Test func removingHopByHopHeadersNotesViaAndClassification() {
        var headers: HTTPHeaders = ["Via": "1.1 a", "L5D-Retryable": "true", "Connection": "keep-alive"]
        var seen = HeaderRules.removeHopByHop(&headers)
        #expect(seen.via && seen.classification)
        #expect(headers.map(\.name) == ["Via", "L5D-Retryable"])
        headers = ["l5d-success-class": "1.0"]
        seen = HeaderRules.removeHopByHop(&headers)
        #expect(!seen.via && seen.classification)
        #expect(headers.map(\.name) == ["l5d-success-class"])
        // A Connection header naming Via removes it (though it was seen on the way).
        headers = ["Connection": "via", "Via": "1.1 a", "X": "1"]
        HeaderRules.removeHopByHop(&headers)
        #expect(headers.map(\.name) == ["X"])
    }

    @Test func hopByHopNamesAreKnownInAnyCase() {
        for name in ["te", "TE", "upgrade", "Trailer", "CONNECTION", "keep-alive", "Proxy-Connection", "transfer-encoding", "proxy-authenticate", "Proxy-Authorization"] {
            #expect(HeaderRules.hopByHopName(name) == name.lowercased())
            #expect(HeaderRules.isHopByHop(name))
        }
        for name in ["t", "tee", "upgrades", "connectio", "keepalive", "proxy", "transfer-encodings", "content-length", "host", ""] {
            #expect(HeaderRules.hopByHopName(name) == nil, "\(name)")
        }
    }

    // MARK: Via

    @Test func meshdJoinsAnExistingViaList() {
        var none: HTTPHeaders = ["X": "1"]
        #expect(!HeaderRules.extendVia(&none))
        #expect(none.map(\.name) == ["X"])
        var one: HTTPHeaders = ["Via": "1.0 fred"]
        #expect(HeaderRules.extendVia(&one))
        #expect(one["via"] == ["1.0 fred, 1.1 meshd"])
        var several: HTTPHeaders = ["Via": "1.0 fred, 1.1 p.example.net", "X": "1", "via": "1.1 linkerd"]
        #expect(HeaderRules.extendVia(&several))
        #expect(several["via"] == ["1.0 fred, 1.1 p.example.net, 1.1 linkerd, 1.1 meshd"])
        #expect(several["x"] == ["1"])
    }

    @Test func viaHopsCountEveryListMember() {
        #expect(HeaderRules.viaHops([:]) == 0)
        #expect(HeaderRules.viaHops(["Via": "1.1 a"]) == 1)
        #expect(HeaderRules.viaHops(["Via": "1.0 a, 1.1 b", "X": "1", "VIA": "1.1 c"]) == 3)
    }

    // MARK: helpers

    func request(_ method: HTTPMethod, _ headers: HTTPHeaders = [:], version: HTTPVersion = .http1_1) -> HTTPRequestHead {
        var all: HTTPHeaders = ["Host": "example"]
        all.add(contentsOf: headers)
        return HTTPRequestHead(version: version, method: method, uri: "/", headers: all)
    }

    /// The framing decided for an accepted request; nil (and an issue) if it was refused.
    func framing(_ head: HTTPRequestHead, sourceLocation: SourceLocation = #_sourceLocation) -> HeaderRules.RequestFraming? {
        switch RequestValidator.validate(head, limits: Self.limits) {
        case .success(let (framing, _)): return framing
        case .failure(let error):
            Issue.record("refused: \(error.message)", sourceLocation: sourceLocation)
            return nil
        }
    }

    /// Why the request was refused; nil (and an issue) if it was accepted.
    func refusal(_ head: HTTPRequestHead, sourceLocation: SourceLocation = #_sourceLocation) -> ProxyError? {
        switch RequestValidator.validate(head, limits: Self.limits) {
        case .success(let (framing, _)):
            Issue.record("accepted, framed \(framing)", sourceLocation: sourceLocation)
            return nil
        case .failure(let error): return error
        }
    }
}
