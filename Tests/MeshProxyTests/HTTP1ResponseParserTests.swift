@testable import MeshHTTP1
@testable import MeshProxy
@testable import MeshRouting
import NIOCore
import NIOHTTP1
import Testing

/// `ResponseParser` on upstream byte streams as reads deliver them: whole, split in two at every
/// point and a byte at a time, a stream must parse to the same heads, body bytes, ends and
/// trailers; a malformed one must be refused, with the same error, however it is split.
@Suite struct HTTP1ResponseParserTests {
    // MARK: framing

    @Test func aContentLengthBodyEndsAfterItsLength() {
        expectSameForEveryRead(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Reply: yes\r\n\r\nhello",
            methods: [.GET],
            parse: [head(200, ["Content-Length: 5", "X-Reply: yes"]), body("hello"), end()]
        )
    }

    @Test func agreeingContentLengthsAreOneLength() {
        expectSameForEveryRead(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\nabc",
            methods: [.GET],
            parse: [head(200, ["Content-Length: 3", "content-length: 3"]), body("abc"), end()]
        )
    }

    @Test func aZeroContentLengthEndsWithTheHead() {
        expectSameForEveryRead(
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            methods: [.GET],
            parse: [head(200, ["Content-Length: 0"]), end()]
        )
    }

    @Test func chunkedBodiesDropExtensionsAndKeepTrailers() {
        let stream = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + "5;name=value\r\nhello\r\n"
            + "6 ; x\r\n world\r\n"
            + "A\r\n0123456789\r\n"
            + "1a;a=1;b=\"q\"\r\nabcdefghijklmnopqrstuvwxyz\r\n"
            + "0;last\r\nX-Checksum: abc\r\nX-Count: 4\r\n\r\n"
        expectSameForEveryRead(
            stream,
            methods: [.GET],
            parse: [
                head(200, ["Transfer-Encoding: chunked"]),
                body("hello world0123456789abcdefghijklmnopqrstuvwxyz"),
                end(["X-Checksum: abc", "X-Count: 4"]),
            ]
        )
    }

    @Test func aChunkedBodyWithoutTrailersEndsWithNone() {
        expectSameForEveryRead(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            methods: [.GET],
            parse: [head(200, ["Transfer-Encoding: chunked"]), body("abc"), end()]
        )
    }

    /// RFC 9112 §6.3: the last transfer coding decides; chunked anywhere else leaves the body
    /// delimited by the connection's close.
    /// A coding other than chunked (gzip, in any position) is refused: forwarded without it the
    /// client would get gzip bytes presented as the body.
    @Test func aTransferCodingOtherThanChunkedIsRefused() {
        for stream in [
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\n",
        ] {
            var parser = ResponseParser()
            parser.requestSent(.GET)
            var events: [ResponseParser.Event] = []
            #expect(throws: UnsupportedTransferCoding.self, "\(stream.debugDescription)") { try parser.feed(buffer(stream), into: &events) }
            #expect(events.isEmpty)
        }
        expectSameForEveryRead(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            methods: [.GET],
            parse: [head(200, ["Transfer-Encoding: Chunked"]), body("abc"), end()]
        )
    }

    @Test func aBodyWithoutLengthEndsWhenTheConnectionCloses() {
        // What looks like a head inside it is body.
        let stream = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"
        expectSameForEveryRead(
            stream, methods: [.GET], closeAtEnd: true,
            parse: [
                head(200, ["Content-Type: text/plain"], keepAlive: false),
                body("until close\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"), end(),
            ]
        )
        // Until the close, it has not ended.
        expectSameForEveryRead(
            stream, methods: [.GET], closeAtEnd: false,
            parse: [head(200, ["Content-Type: text/plain"], keepAlive: false), body("until close\r\n\r\nHTTP/1.1 200 OK\r\n\r\n")]
        )
    }

    /// A 1.0 response asking to be kept alive but without a length still ends only at the close,
    /// so the connection cannot be reused.
    @Test func keepAliveWithoutALengthStillReadsUntilClose() {
        expectSameForEveryRead(
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\nuntil close",
            methods: [.GET], closeAtEnd: true,
            parse: [head(200, ["Connection: keep-alive"], version: .http1_0, keepAlive: false), body("until close"), end()]
        )
    }

    // MARK: bodiless responses

    @Test func responsesToHEADHaveNoBodyWhateverTheirFraming() {
        let stream = "HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n"
            + "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + "HTTP/1.1 200 OK\r\n\r\n"
            + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        expectSameForEveryRead(
            stream,
            methods: [.HEAD, .HEAD, .HEAD, .GET],
            parse: [
                // Framing that declares a body: the connection is not reused after it (a lying
                // upstream's late body would answer the next request).
                head(200, ["Content-Length: 50"], keepAlive: false), end(),
                head(200, ["Transfer-Encoding: chunked"], keepAlive: false), end(),
                // No framing at all: still no body, so not read until close either.
                head(200, []), end(),
                head(200, ["Content-Length: 2"]), body("ok"), end(),
            ]
        )
    }

    @Test func noContentAndNotModifiedHaveNoBody() {
        let stream = "HTTP/1.1 204 No Content\r\n\r\n"
            + "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nETag: \"v1\"\r\n\r\n"
            + "HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n"
            + "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
        expectSameForEveryRead(
            stream,
            methods: [.GET, .GET, .GET, .GET],
            parse: [
                head(204, []), end(),
                head(304, ["Content-Length: 10", "ETag: \"v1\""], keepAlive: false), end(),
                head(204, ["Transfer-Encoding: chunked"], keepAlive: false), end(),
                head(200, ["Content-Length: 3"]), body("abc"), end(),
            ]
        )
    }

    /// Interim responses come before the final one for the same request: they have no end, and
    /// they do not use up the request (the final head would otherwise be bytes nobody asked for).
    @Test func informationalResponsesPrecedeTheFinalOne() {
        let stream = "HTTP/1.1 100 Continue\r\n\r\n"
            + "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
            + "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
        expectSameForEveryRead(
            stream,
            methods: [.GET],
            parse: [
                head(100, []),
                head(103, ["Link: </style.css>; rel=preload"]),
                head(200, ["Content-Length: 3"]), body("abc"), end(),
            ]
        )
    }

    /// After a 101 the connection no longer carries HTTP: nothing after the head is parsed, and
    /// its close ends nothing.
    @Test func nothingAfterSwitchingProtocolsIsParsed() {
        let stream = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
            + "\u{0}\u{1}\u{2}frames HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"
        expectSameForEveryRead(
            stream,
            methods: [.GET, .GET], closeAtEnd: true,
            // keepAlive is what the head's own headers say; the exchange refuses a 101 anyway.
            parse: [head(101, ["Upgrade: websocket", "Connection: Upgrade"])]
        )
    }

    // MARK: several responses

    @Test func pipelinedResponsesParseInOrderAndStrayLineEndsBetweenThemAreSkipped() {
        let stream = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst"
            + "\r\n\r\n"
            + "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n"
            + "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nthird\r\n0\r\n\r\n"
            + "\r\n"
            + "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        expectSameForEveryRead(
            stream,
            methods: [.GET, .HEAD, .POST, .GET],
            parse: [
                head(200, ["Content-Length: 5"]), body("first"), end(),
                head(200, ["Content-Length: 7"], keepAlive: false), end(),
                head(201, ["Transfer-Encoding: chunked"]), body("third"), end(),
                head(404, ["Content-Length: 0", "Connection: close"], keepAlive: false), end(),
            ]
        )
    }

    @Test func keepAliveIsCloseThenKeepAliveThenTheVersionsDefault() {
        let cases: [(version: String, connection: String?, keepAlive: Bool)] = [
            ("1.1", nil, true),
            ("1.1", "close", false),
            ("1.1", "Close", false),
            ("1.1", "keep-alive, close", false),
            ("1.1", "upgrade ,  close", false),
            ("1.0", nil, false),
            ("1.0", "keep-alive", true),
            ("1.0", "Keep-Alive", true),
            ("1.0", "close, keep-alive", false),
            ("1.0", "keep-alive-ish", false),
        ]
        for (version, connection, keepAlive) in cases {
            let fields = ["Content-Length: 0"] + (connection.map { ["Connection: \($0)"] } ?? [])
            let stream = "HTTP/\(version) 200 OK\r\n" + fields.map { $0 + "\r\n" }.joined() + "\r\n"
            expectSameForEveryRead(
                stream, methods: [.GET],
                parse: [head(200, fields, version: version == "1.0" ? .http1_0 : .http1_1, keepAlive: keepAlive), end()]
            )
        }
    }

    // MARK: what heads may hold

    @Test func valuesAreTrimmedAndMayHoldAnyVisibleOrNonASCIIBytes() {
        expectSameForEveryRead(
            "HTTP/1.1 200 Très bien\r\nX-Spaced: \t  a  value \t \r\nX-Empty:\r\nX-Text: café ☕\r\nX-Tokens!#$%&'*+-.^_`|~: 1\r\nContent-Length: 0\r\n\r\n",
            methods: [.GET],
            parse: [head(200, ["X-Spaced: a  value", "X-Empty: ", "X-Text: café ☕", "X-Tokens!#$%&'*+-.^_`|~: 1", "Content-Length: 0"]), end()]
        )
    }

    @Test func aStatusLineNeedsNoReasonAndAnyThreeDigitCode() {
        expectSameForEveryRead(
            "HTTP/1.1 299\r\nContent-Length: 0\r\n\r\nHTTP/1.1 599 \r\nContent-Length: 0\r\n\r\n",
            methods: [.GET, .GET],
            parse: [head(299, ["Content-Length: 0"]), end(), head(599, ["Content-Length: 0"]), end()]
        )
    }

    // MARK: malformed responses

    @Test func malformedStatusLinesAreRefused() {
        let cases: [(line: String, error: HTTPParserError)] = [
            ("HTTP/2.0 200 OK", .invalidVersion),
            ("HTTP/1.2 200 OK", .invalidVersion),
            ("http/1.1 200 OK", .invalidVersion),
            ("ICY 200 OK", .invalidVersion),
            ("HTTP/1.1", .invalidVersion),
            ("HTTP/1.1  200 OK", .invalidStatus),
            ("HTTP/1.1 20 OK", .invalidStatus),
            ("HTTP/1.1 20x OK", .invalidStatus),
            ("HTTP/1.1 2000 OK", .invalidStatus),
            ("HTTP/1.1 099 Low", .invalidStatus),
            ("HTTP/1.1 000 Zero", .invalidStatus),
            ("HTTP/1.1 200 O\u{7F}K", .invalidCharactersUsed),
            ("HTTP/1.1 200 O\u{0}K", .invalidCharactersUsed),
            // A bare LF: the line runs on to the next CR, and the LF is a control character in it.
            ("HTTP/1.1 200 OK\nX-Next: 1", .invalidCharactersUsed),
        ]
        for (line, error) in cases {
            expectRefusedForEveryRead(line + "\r\nContent-Length: 0\r\n\r\n", methods: [.GET], with: error)
        }
    }

    @Test func malformedHeaderLinesAreRefused() {
        let cases: [(lines: String, error: HTTPParserError)] = [
            ("Bad Name: x", .invalidHeaderToken),
            ("Name : x", .invalidHeaderToken),
            (": x", .invalidHeaderToken),
            ("NoColon", .invalidHeaderToken),
            ("X-Quote\": x", .invalidHeaderToken),
            // obs-fold
            ("X-A: one\r\n two", .invalidHeaderToken),
            ("X-A: one\r\n\ttwo", .invalidHeaderToken),
            ("X-A: a\u{1}b", .invalidHeaderToken),
            ("X-A: a\u{7F}", .invalidHeaderToken),
            ("X-A: a\nX-B: b", .invalidHeaderToken),
            ("X-A: a\rb", .lfExpected),
        ]
        for (lines, error) in cases {
            expectRefusedForEveryRead("HTTP/1.1 200 OK\r\n\(lines)\r\nContent-Length: 0\r\n\r\n", methods: [.GET], with: error)
        }
    }

    @Test func malformedChunksAreRefused() {
        let cases: [(chunks: String, error: HTTPParserError)] = [
            ("zz\r\n", .invalidChunkSize),
            ("\r\n", .invalidChunkSize),
            (";ext\r\n", .invalidChunkSize),
            (" 5\r\nhello\r\n", .invalidChunkSize),
            ("-1\r\n", .invalidChunkSize),
            ("0x5\r\nhello\r\n", .invalidChunkSize),
            ("1000000000000000\r\n", .invalidChunkSize),
            ("5\nhello\r\n", .lfExpected),
            // More data than the size said.
            ("5\r\nhello!\r\n0\r\n\r\n", .invalidChunkSize),
            // The last chunk's trailers, malformed.
            ("0\r\nBad Trailer: x\r\n\r\n", .invalidHeaderToken),
        ]
        for (chunks, error) in cases {
            expectRefusedForEveryRead("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks, methods: [.GET], with: error)
        }
    }

    @Test func fifteenHexDigitsIsTheLongestChunkSize() {
        var parser = ResponseParser()
        parser.requestSent(.GET)
        var events: [ResponseParser.Event] = []
        #expect(throws: Never.self) {
            try parser.feed(buffer("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000f\r\nabc"), into: &events)
        }
        #expect(collect(events) == [head(200, ["Transfer-Encoding: chunked"]), body("abc")])
    }

    @Test func invalidOrConflictingContentLengthsAreRefused() {
        let cases = [
            "Content-Length: 5\r\nContent-Length: 6",
            "Content-Length: 5, 5",
            "Content-Length: -1",
            "Content-Length: +5",
            "Content-Length: ",
            "Content-Length: 0x10",
            "Content-Length: 5 5",
            "Content-Length: 1234567890123456789",
        ]
        for fields in cases {
            expectRefusedForEveryRead("HTTP/1.1 200 OK\r\n\(fields)\r\n\r\nhello", methods: [.GET], with: .invalidContentLength)
        }
    }

    @Test func contentLengthWithTransferEncodingIsRefusedEvenWithoutABody() {
        for (fields, method) in [
            ("Content-Length: 5\r\nTransfer-Encoding: chunked", HTTPMethod.GET),
            ("Transfer-Encoding: chunked\r\nContent-Length: 5", .GET),
            ("Transfer-Encoding: gzip\r\nContent-Length: 5", .GET),
            ("Content-Length: 5\r\nTransfer-Encoding: chunked", .HEAD),
        ] {
            expectRefusedForEveryRead("HTTP/1.1 200 OK\r\n\(fields)\r\n\r\n5\r\nhello\r\n0\r\n\r\n", methods: [method], with: .unexpectedContentLength)
        }
    }

    @Test func bytesNobodyAskedForAreRefused() {
        expectRefusedForEveryRead("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", methods: [], with: .invalidInternalState)
        // One response too many, or even a stray line end after the last one asked for.
        let one = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        for extra in ["HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "\r\n", "x"] {
            expectRefusedForEveryRead(one + extra, methods: [.GET], with: .invalidInternalState)
            var parser = ResponseParser()
            parser.requestSent(.GET)
            var events: [ResponseParser.Event] = []
            #expect(throws: HTTPParserError.invalidInternalState) { try parser.feed(buffer(one + extra), into: &events) }
            #expect(collect(events) == [head(200, ["Content-Length: 2"]), body("ok"), end()], "the response asked for is still delivered")
        }
    }

    // MARK: limits

    @Test func aHeadOverTheLimitIsRefused() {
        let stream = Self.headText(blockBytes: ResponseParser.maxHeadBytes + 1) + "\r\n"
        expectRefusedForEveryRead(stream, methods: [.GET], with: .headerOverflow, points: Self.samplePoints(stream.utf8.count))
    }

    @Test func aHeadThatNeverEndsIsRefusedOnceItPassesTheLimit() throws {
        var parser = ResponseParser()
        parser.requestSent(.GET)
        var events: [ResponseParser.Event] = []
        var start = "HTTP/1.1 200 OK\r\nX-Pad: "
        start += String(repeating: "a", count: ResponseParser.maxHeadBytes - start.utf8.count)
        try parser.feed(buffer(start), into: &events)
        #expect(parser.hasBufferedBytes)
        // One byte more may be the CR of the blank line; two cannot.
        try parser.feed(buffer("a"), into: &events)
        #expect(throws: HTTPParserError.headerOverflow) { try parser.feed(buffer("a"), into: &events) }
        #expect(events.isEmpty)
    }

    @Test func aHeadAtTheLimitIsAccepted() {
        let stream = Self.headText(blockBytes: ResponseParser.maxHeadBytes) + "\r\n"
        var parser = ResponseParser()
        parser.requestSent(.GET)
        var events: [ResponseParser.Event] = []
        #expect(throws: Never.self) { try parser.feed(buffer(stream), into: &events) }
        #expect(collect(events).count == 2, "a head and its end")
    }

    /// A head of exactly `maxHeadBytes` (without its blank line) is accepted however it arrives —
    /// also when a read ends between the CR and the LF of its blank line (once a bug: the bytes
    /// buffered then, the head and one CR, were taken for an over-long head).
    @Test
    func theHeadLimitDoesNotDependOnWhereReadsEnd() {
        let stream = Self.headText(blockBytes: ResponseParser.maxHeadBytes) + "\r\n"
        expectSameForEveryRead(
            stream, methods: [.GET],
            parse: [head(200, Self.paddedFields(blockBytes: ResponseParser.maxHeadBytes)), end()],
            points: Self.samplePoints(stream.utf8.count)
        )
    }

    @Test func trailersOverTheLimitAreRefused() {
        let trailer = "X-Trailer: " + String(repeating: "t", count: ResponseParser.maxHeadBytes) + "\r\n\r\n"
        let stream = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n" + trailer
        expectRefusedForEveryRead(stream, methods: [.GET], with: .headerOverflow, points: Self.samplePoints(stream.utf8.count))
    }

    /// A chunk-size line has one 1 KB limit, whether it arrives whole or split (once a bug: the
    /// limit applied only to an incomplete line, so a long extension passed in one read).
    @Test
    func theChunkSizeLineLimitDoesNotDependOnWhereReadsEnd() {
        let stream = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + "5;ext=" + String(repeating: "e", count: 1100) + "\r\nhello\r\n0\r\n\r\n"
        let bytes = Array(stream.utf8)
        let whole = parse([bytes[...]], methods: [.GET], closeAtEnd: false)
        var differing: [Int] = []
        for split in 0...bytes.count where parse([bytes[..<split], bytes[split...]], methods: [.GET], closeAtEnd: false) != whole {
            differing.append(split)
        }
        #expect(differing.isEmpty, "whole: \(whole); \(differing.count) splits differ, from \(differing.first ?? -1) to \(differing.last ?? -1)")
    }

    // MARK: the connection's close

    @Test func aResponseCutShortByTheCloseIsRefused() {
        let cases = [
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello",
            "HTTP/1.1 200 OK\r\nContent-Len",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n",
        ]
        for stream in cases {
            expectRefusedForEveryRead(stream, methods: [.GET], closeAtEnd: true, with: .invalidEOFState)
        }
    }

    @Test func closingBetweenResponsesIsNotAnError() {
        expectSameForEveryRead(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", methods: [.GET, .GET], closeAtEnd: true,
            parse: [head(200, ["Content-Length: 2"]), body("ok"), end()]
        )
        expectSameForEveryRead("", methods: [.GET], closeAtEnd: true, parse: [])
    }

    // MARK: buffered bytes

    @Test func bytesAfterACompleteResponseAreBufferedUntilTheyParse() throws {
        var parser = ResponseParser()
        parser.requestSent(.GET)
        parser.requestSent(.GET)
        var events: [ResponseParser.Event] = []
        try parser.feed(buffer("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), into: &events)
        #expect(!parser.hasBufferedBytes, "a complete response leaves nothing behind")
        try parser.feed(buffer("HTTP/1.1 204 No"), into: &events)
        #expect(parser.hasBufferedBytes, "part of the next head waits for the rest")
        try parser.feed(buffer(" Content\r\n\r\n"), into: &events)
        #expect(!parser.hasBufferedBytes)
        #expect(collect(events) == [head(200, ["Content-Length: 2"]), body("ok"), end(), head(204, []), end()])
    }

    @Test func aCompleteResponseAndPartOfTheNextInOneReadLeavesBufferedBytes() throws {
        for extra in ["H", "\r", "HTTP/1.1 200 OK\r\nContent-Le"] {
            var parser = ResponseParser()
            parser.requestSent(.GET)
            parser.requestSent(.GET)
            var events: [ResponseParser.Event] = []
            try parser.feed(buffer("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + extra), into: &events)
            #expect(collect(events) == [head(200, ["Content-Length: 2"]), body("ok"), end()])
            #expect(parser.hasBufferedBytes, "after \(extra.debugDescription)")
        }
    }

    @Test func bodyBytesAreHandedOnNotBuffered() throws {
        var parser = ResponseParser()
        parser.requestSent(.GET)
        parser.requestSent(.GET)
        var events: [ResponseParser.Event] = []
        try parser.feed(buffer("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhel"), into: &events)
        #expect(!parser.hasBufferedBytes)
        try parser.feed(buffer("lo"), into: &events)
        #expect(!parser.hasBufferedBytes)
        #expect(collect(events) == [head(200, ["Content-Length: 10"]), body("hello")])
        // A chunk-size line is different: it is buffered until its line end.
        try parser.feed(buffer("world"), into: &events)
        try parser.feed(buffer("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1"), into: &events)
        #expect(parser.hasBufferedBytes)
        try parser.feed(buffer("0\r\n"), into: &events)
        #expect(!parser.hasBufferedBytes)
    }

    // MARK: helpers

    /// A head whose block (status line and fields, each with its CRLF, without the blank line)
    /// is exactly `blockBytes` long.
    static func headText(blockBytes: Int) -> String {
        "HTTP/1.1 200 OK\r\n" + paddedFields(blockBytes: blockBytes).map { $0 + "\r\n" }.joined()
    }

    static func paddedFields(blockBytes: Int) -> [String] {
        let fixed = "HTTP/1.1 200 OK\r\n".utf8.count + "Content-Length: 0\r\n".utf8.count + "X-Pad: \r\n".utf8.count
        return ["Content-Length: 0", "X-Pad: " + String(repeating: "p", count: blockBytes - fixed)]
    }

    /// Split points for streams too long to split at every byte: every 997th, and every point
    /// near the end, where the head's limit is decided.
    static func samplePoints(_ count: Int) -> [Int] {
        Array(Set(Array(stride(from: 0, through: count, by: 997)) + Array(max(0, count - 8)...count))).sorted()
    }
}

// MARK: parsing harness

/// One parsed part, comparable across splits. Headers are `name: value`.
private enum Part: Equatable, CustomStringConvertible {
    case head(code: UInt, version: HTTPVersion, headers: [String], keepAlive: Bool)
    case body([UInt8])
    case end(trailers: [String]?)

    var description: String {
        switch self {
        case .head(let code, let version, let headers, let keepAlive):
            return "head(\(code) \(version) \(headers)\(keepAlive ? "" : " close"))"
        case .body(let bytes):
            return "body(\(String(decoding: bytes, as: UTF8.self).debugDescription))"
        case .end(let trailers):
            return trailers.map { "end(\($0))" } ?? "end"
        }
    }
}

private func head(_ code: UInt, _ headers: [String], version: HTTPVersion = .http1_1, keepAlive: Bool = true) -> Part {
    .head(code: code, version: version, headers: headers, keepAlive: keepAlive)
}

private func body(_ text: String) -> Part { .body(Array(text.utf8)) }

private func end(_ trailers: [String]? = nil) -> Part { .end(trailers: trailers) }

/// What a stream parsed to: its parts (consecutive body slices joined), the error, if any, and
/// how many body slices were empty (none should be).
private struct Outcome: Equatable, CustomStringConvertible {
    var parts: [Part] = []
    var error: HTTPParserError?
    var emptyBodySlices = 0

    var description: String {
        "\(parts)" + (error.map { " then \($0)" } ?? "") + (emptyBodySlices > 0 ? " (\(emptyBodySlices) empty body slices)" : "")
    }

    mutating func append(_ events: [ResponseParser.Event]) {
        for event in events {
            switch event {
            case .head(let head, let keepAlive):
                parts.append(.head(
                    code: head.status.code, version: head.version,
                    headers: head.headers.map { "\($0.name): \($0.value)" }, keepAlive: keepAlive
                ))
            case .body(let slice):
                if slice.readableBytes == 0 { emptyBodySlices += 1 }
                if case .body(let earlier)? = parts.last {
                    parts[parts.count - 1] = .body(earlier + Array(slice.readableBytesView))
                } else {
                    parts.append(.body(Array(slice.readableBytesView)))
                }
            case .end(let trailers):
                parts.append(.end(trailers: trailers.map { $0.map { "\($0.name): \($0.value)" } }))
            }
        }
    }
}

private func collect(_ events: [ResponseParser.Event]) -> [Part] {
    var outcome = Outcome()
    outcome.append(events)
    return outcome.parts
}

private func buffer(_ text: String) -> ByteBuffer {
    ByteBuffer(string: text)
}

/// Feeds `pieces` as successive reads, after the requests `methods` were sent.
private func parse(_ pieces: [ArraySlice<UInt8>], methods: [HTTPMethod], closeAtEnd: Bool) -> Outcome {
    var parser = ResponseParser()
    for method in methods { parser.requestSent(method) }
    var outcome = Outcome()
    var events: [ResponseParser.Event] = []
    do {
        for piece in pieces {
            try parser.feed(ByteBuffer(bytes: piece), into: &events)
            outcome.append(events)
            events.removeAll()
        }
        if closeAtEnd {
            try parser.closed(into: &events)
            outcome.append(events)
        }
    } catch let error as HTTPParserError {
        outcome.append(events)
        outcome.error = error
    } catch {
        Issue.record("the parser threw something other than an HTTPParserError: \(error)")
    }
    return outcome
}

/// The ways a stream may arrive: whole; in two reads, split at every point (or at `points`);
/// a byte at a time (or, for long streams, 1000 bytes at a time).
private func readings(of bytes: [UInt8], points: [Int]?) -> [(name: String, pieces: [ArraySlice<UInt8>])] {
    var readings: [(String, [ArraySlice<UInt8>])] = [("whole", [bytes[...]])]
    for split in points ?? Array(0...bytes.count) {
        readings.append(("split at \(split)", [bytes[..<split], bytes[split...]]))
    }
    let step = points == nil ? 1 : 1000
    readings.append(
        ("\(step) byte(s) at a time", stride(from: 0, to: bytes.count, by: step).map { bytes[$0..<min($0 + step, bytes.count)] })
    )
    return readings
}

/// The stream parses to `expected`, and to nothing else however its reads are split.
private func expectSameForEveryRead(
    _ stream: String, methods: [HTTPMethod], closeAtEnd: Bool = false, parse expected: [Part], points: [Int]? = nil,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    let bytes = Array(stream.utf8)
    let wanted = Outcome(parts: expected)
    let whole = parse([bytes[...]], methods: methods, closeAtEnd: closeAtEnd)
    #expect(whole == wanted, "in one read", sourceLocation: sourceLocation)
    guard whole == wanted else { return }
    var differing: [String] = []
    for reading in readings(of: bytes, points: points) {
        let outcome = parse(reading.pieces, methods: methods, closeAtEnd: closeAtEnd)
        if outcome != wanted { differing.append("\(reading.name): \(outcome)") }
    }
    #expect(differing.isEmpty, "\(differing.count) ways of reading \(stream.prefix(60).debugDescription) parse differently; first \(differing.first ?? "")", sourceLocation: sourceLocation)
}

/// The stream is refused with `error` however its reads are split.
private func expectRefusedForEveryRead(
    _ stream: String, methods: [HTTPMethod], closeAtEnd: Bool = false, with error: HTTPParserError, points: [Int]? = nil,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    let bytes = Array(stream.utf8)
    var differing: [String] = []
    for reading in readings(of: bytes, points: points) {
        let outcome = parse(reading.pieces, methods: methods, closeAtEnd: closeAtEnd)
        if outcome.error != error { differing.append("\(reading.name): \(outcome)") }
    }
    #expect(differing.isEmpty, "\(stream.prefix(60).debugDescription) must be refused with \(error): \(differing.count) ways of reading it were not; first \(differing.first ?? "")", sourceLocation: sourceLocation)
}
