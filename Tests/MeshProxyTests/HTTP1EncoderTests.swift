@testable import MeshHTTP1
@testable import MeshProxy
@testable import MeshRouting
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

/// `ResponseEncoder` and `RequestEncoder` in a channel: the exact bytes each head, body part and
/// end becomes — status and request lines, headers in their order, and the framing RFC 9112 §6
/// asks for (chunked or a length, no body for HEAD, CONNECT, 1xx, 204 and 304).
@Suite struct HTTP1EncoderTests {
    // MARK: response heads

    @Test func aResponseHeadIsItsStatusLineThenItsHeadersInOrder() throws {
        let channel = try responseChannel()
        let head = HTTPResponseHead(
            version: .http1_1, status: .ok,
            headers: ["Content-Length": "5", "X-B": "2", "x-a": "1", "X-B": "3"]
        )
        try write(.head(head), to: channel)
        #expect(try written(channel) == "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-B: 2\r\nx-a: 1\r\nX-B: 3\r\n\r\n")
    }

    @Test func theReasonPhraseIsTheStandardOneForTheCode() throws {
        let cases: [(HTTPResponseStatus, HTTPVersion, String)] = [
            (.notFound, .http1_1, "HTTP/1.1 404 Not Found\r\n"),
            (.serviceUnavailable, .http1_0, "HTTP/1.0 503 Service Unavailable\r\n"),
            (.custom(code: 599, reasonPhrase: "Network Weirdness"), .http1_1, "HTTP/1.1 599 Network Weirdness\r\n"),
            (HTTPResponseStatus(statusCode: 299), .http1_1, "HTTP/1.1 299 \r\n"),
            (.ok, HTTPVersion(major: 2, minor: 0), "HTTP/2.0 200 OK\r\n"),
        ]
        for (status, version, line) in cases {
            let channel = try responseChannel()
            try write(.head(HTTPResponseHead(version: version, status: status, headers: ["Content-Length": "0"])), to: channel)
            #expect(try written(channel) == line + "Content-Length: 0\r\n\r\n")
        }
    }

    @Test func headerBytesAreCopiedAsTheyAreAndLongBlocksFit() throws {
        let channel = try responseChannel()
        var headers: HTTPHeaders = ["Content-Length": "0", "X-Text": "café ☕"]
        var expected = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Text: café ☕\r\n"
        for index in 0..<100 {
            let value = String(repeating: Character(String(index % 10)), count: 50)
            headers.add(name: "X-Header-\(index)", value: value)
            expected += "X-Header-\(index): \(value)\r\n"
        }
        try write(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers)), to: channel)
        #expect(try written(channel) == expected + "\r\n")
    }

    // MARK: response framing

    @Test func aContentLengthBodyGoesOutAsItIs() throws {
        let channel = try responseChannel()
        try write(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: ["Content-Length": "10"])), to: channel)
        try write(.body(.byteBuffer(ByteBuffer(string: "hello"))), to: channel)
        try write(.body(.byteBuffer(ByteBuffer(string: "world"))), to: channel)
        // No last chunk, and the trailers have nowhere to go.
        try write(.end(["X-Trailer": "1"]), to: channel)
        #expect(try written(channel) == "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhelloworld")
    }

    @Test func withoutALengthAnHTTP11BodyIsChunked() throws {
        let channel = try responseChannel()
        try write(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: ["Content-Type": "text/plain"])), to: channel)
        try write(.body(.byteBuffer(ByteBuffer(string: "hello"))), to: channel)
        // An empty part is not framed: an empty chunk would end the body.
        try write(.body(.byteBuffer(ByteBuffer())), to: channel)
        let long = String(repeating: "x", count: 255)
        try write(.body(.byteBuffer(ByteBuffer(string: long))), to: channel)
        try write(.end(nil), to: channel)
        #expect(try written(channel) == "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n"
            + "5\r\nhello\r\n" + "ff\r\n\(long)\r\n" + "0\r\n\r\n")
    }

    @Test func trailersFollowTheLastChunk() throws {
        let channel = try responseChannel()
        try write(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: ["Transfer-Encoding": "chunked"])), to: channel)
        try write(.body(.byteBuffer(ByteBuffer(string: "abc"))), to: channel)
        try write(.end(["X-Checksum": "abc", "X-Count": "1"]), to: channel)
        #expect(try written(channel) == "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Checksum: abc\r\nX-Count: 1\r\n\r\n")
    }

    @Test func aTransferCodingOtherThanChunkedBecomesChunked() throws {
        let channel = try responseChannel()
        try write(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: ["Transfer-Encoding": "gzip", "X-A": "1"])), to: channel)
        try write(.body(.byteBuffer(ByteBuffer(string: "abc"))), to: channel)
        try write(.end(nil), to: channel)
        #expect(try written(channel) == "HTTP/1.1 200 OK\r\nX-A: 1\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    }

    @Test func aContentLengthWinsOverTransferEncoding() throws {
        let channel = try responseChannel()
        try write(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: ["Transfer-Encoding": "chunked", "Content-Length": "3"])), to: channel)
        try write(.body(.byteBuffer(ByteBuffer(string: "abc"))), to: channel)
        try write(.end(nil), to: channel)
        #expect(try written(channel) == "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")
    }

    @Test func anHTTP10BodyWithoutALengthIsNotFramed() throws {
        let channel = try responseChannel()
        try write(.head(HTTPResponseHead(version: .http1_0, status: .ok, headers: ["X-A": "1"])), to: channel)
        try write(.body(.byteBuffer(ByteBuffer(string: "until close"))), to: channel)
        try write(.end(nil), to: channel)
        #expect(try written(channel) == "HTTP/1.0 200 OK\r\nX-A: 1\r\n\r\nuntil close")
    }

    @Test func noContentAndNotModifiedLoseTheirFramingHeaders() throws {
        for (status, line) in [(HTTPResponseStatus.noContent, "HTTP/1.1 204 No Content"), (.notModified, "HTTP/1.1 304 Not Modified")] {
            let channel = try responseChannel()
            try write(.head(HTTPResponseHead(version: .http1_1, status: status, headers: ["Content-Length": "5", "X-A": "1", "Transfer-Encoding": "chunked"])), to: channel)
            try write(.end(nil), to: channel)
            #expect(try written(channel) == line + "\r\nX-A: 1\r\n\r\n")
        }
    }

    // MARK: responses to HEAD and CONNECT

    @Test func aResponseToHEADKeepsItsFramingHeadersButSendsNoBody() throws {
        let channel = try responseChannel()
        encoder(channel).recordRequestMethod(.HEAD)
        try write(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: ["Content-Length": "50"])), to: channel)
        #expect(throws: NIOHTTPResponseEncoderError.responseBodyNotAllowed) {
            try write(.body(.byteBuffer(ByteBuffer(string: "not allowed"))), to: channel)
        }
        try write(.end(nil), to: channel)
        #expect(try written(channel) == "HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n")
    }

    @Test func aResponseToHEADWithoutALengthSaysChunkedButSendsNoLastChunk() throws {
        let channel = try responseChannel()
        encoder(channel).recordRequestMethod(.HEAD)
        try write(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: [:])), to: channel)
        try write(.end(nil), to: channel)
        #expect(try written(channel) == "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    }

    @Test func theResponseAfterOneToHEADHasItsBodyAgain() throws {
        let channel = try responseChannel()
        encoder(channel).recordRequestMethod(.HEAD)
        encoder(channel).recordRequestMethod(.GET)
        try write(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: ["Content-Length": "2"])), to: channel)
        try write(.end(nil), to: channel)
        try write(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: [:])), to: channel)
        try write(.body(.byteBuffer(ByteBuffer(string: "ok"))), to: channel)
        try write(.end(nil), to: channel)
        #expect(try written(channel) == "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
            + "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
    }

    @Test func aResponseToCONNECTHasNoFramingAndNoBody() throws {
        let channel = try responseChannel()
        encoder(channel).recordRequestMethod(.CONNECT)
        try write(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: ["Content-Length": "5", "Transfer-Encoding": "chunked", "X-A": "1"])), to: channel)
        #expect(throws: NIOHTTPResponseEncoderError.responseBodyNotAllowed) {
            try write(.body(.byteBuffer(ByteBuffer(string: "hello"))), to: channel)
        }
        try write(.end(nil), to: channel)
        #expect(try written(channel) == "HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\n")
    }

    /// A 100 Continue comes before the final response to the same request: it must not take the
    /// request's method, which decides the final response's body.
    @Test func anInterimResponseLeavesTheRequestsMethodToTheFinalOne() throws {
        let channel = try responseChannel()
        encoder(channel).recordRequestMethod(.HEAD)
        encoder(channel).recordRequestMethod(.GET)
        try write(.head(HTTPResponseHead(version: .http1_1, status: .continue, headers: ["Content-Length": "0", "X-A": "1"])), to: channel)
        try write(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: ["Content-Length": "5"])), to: channel)
        #expect(throws: NIOHTTPResponseEncoderError.responseBodyNotAllowed) {
            try write(.body(.byteBuffer(ByteBuffer(string: "hello"))), to: channel)
        }
        try write(.end(nil), to: channel)
        try write(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: ["Content-Length": "5"])), to: channel)
        try write(.body(.byteBuffer(ByteBuffer(string: "hello"))), to: channel)
        try write(.end(nil), to: channel)
        #expect(try written(channel) == "HTTP/1.1 100 Continue\r\nX-A: 1\r\n\r\n"
            + "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
            + "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
    }

    // MARK: requests

    @Test func aRequestHeadIsItsRequestLineThenItsHeadersInOrder() throws {
        let channel = try requestChannel()
        let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/path/to?q=1&r=%20", headers: ["host": "example", "Accept": "*/*", "l5d-reqid": "00ff"])
        try send(.head(head), to: channel)
        try send(.end(nil), to: channel)
        #expect(try written(channel) == "GET /path/to?q=1&r=%20 HTTP/1.1\r\nhost: example\r\nAccept: */*\r\nl5d-reqid: 00ff\r\n\r\n")
    }

    @Test func otherMethodsAndVersionsAreWrittenAsTheyAre() throws {
        let cases: [(HTTPMethod, HTTPVersion, String)] = [
            (.OPTIONS, .http1_1, "OPTIONS * HTTP/1.1\r\n"),
            (.DELETE, .http1_0, "DELETE * HTTP/1.0\r\n"),
            (.RAW(value: "PURGE"), .http1_1, "PURGE * HTTP/1.1\r\n"),
        ]
        for (method, version, line) in cases {
            let channel = try requestChannel()
            try send(.head(HTTPRequestHead(version: version, method: method, uri: "*", headers: ["host": "h"])), to: channel)
            #expect(try written(channel) == line + "host: h\r\n\r\n")
        }
    }

    @Test func aRequestWithTransferEncodingIsChunked() throws {
        let channel = try requestChannel()
        try send(.head(HTTPRequestHead(version: .http1_1, method: .POST, uri: "/", headers: ["host": "h", "Transfer-Encoding": "chunked"])), to: channel)
        try send(.body(.byteBuffer(ByteBuffer(string: "hello"))), to: channel)
        try send(.body(.byteBuffer(ByteBuffer())), to: channel)
        try send(.body(.byteBuffer(ByteBuffer(string: "0123456789abcdef"))), to: channel)
        try send(.end(["X-T": "1"]), to: channel)
        #expect(try written(channel) == "POST / HTTP/1.1\r\nhost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            + "5\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nX-T: 1\r\n\r\n")
    }

    /// The head's framing was decided before it got here; the encoder neither adds a framing
    /// header nor guesses one from the method.
    @Test func aRequestIsFramedOnlyAsItsHeadSays() throws {
        let channel = try requestChannel()
        try send(.head(HTTPRequestHead(version: .http1_1, method: .POST, uri: "/a", headers: ["host": "h", "content-length": "3"])), to: channel)
        try send(.body(.byteBuffer(ByteBuffer(string: "abc"))), to: channel)
        try send(.end(nil), to: channel)
        try send(.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/b", headers: ["host": "h", "transfer-encoding": "chunked"])), to: channel)
        try send(.body(.byteBuffer(ByteBuffer(string: "abc"))), to: channel)
        try send(.end(nil), to: channel)
        // After a chunked request, one without framing headers is not chunked.
        try send(.head(HTTPRequestHead(version: .http1_1, method: .PUT, uri: "/c", headers: ["host": "h"])), to: channel)
        try send(.end(nil), to: channel)
        #expect(try written(channel) == "POST /a HTTP/1.1\r\nhost: h\r\ncontent-length: 3\r\n\r\nabc"
            + "GET /b HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            + "PUT /c HTTP/1.1\r\nhost: h\r\n\r\n")
    }

    // MARK: promises

    /// An end with nothing to write still completes its promise, after the writes before it.
    @Test func everyWriteCompletesItsPromise() throws {
        let channel = try responseChannel()
        let parts: [HTTPServerResponsePart] = [
            .head(HTTPResponseHead(version: .http1_1, status: .ok, headers: ["Content-Length": "2"])),
            .body(.byteBuffer(ByteBuffer(string: "ok"))), .end(nil),
            .head(HTTPResponseHead(version: .http1_1, status: .ok, headers: [:])),
            .body(.byteBuffer(ByteBuffer(string: "ok"))), .body(.byteBuffer(ByteBuffer())), .end(["X-T": "1"]),
        ]
        for part in parts {
            let result = completion(of: part, on: channel)
            #expect(result != nil, "\(part) left its promise pending")
        }
        let requests = try requestChannel()
        let requestParts: [HTTPClientRequestPart] = [
            .head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: ["host": "h"])), .end(nil),
            .head(HTTPRequestHead(version: .http1_1, method: .POST, uri: "/", headers: ["transfer-encoding": "chunked"])),
            .body(.byteBuffer(ByteBuffer(string: "ok"))), .end(nil),
        ]
        for part in requestParts {
            #expect(completion(of: part, on: requests) != nil, "\(part) left its promise pending")
        }
    }

    // MARK: helpers

    func responseChannel() throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(ResponseEncoder())
        return channel
    }

    func requestChannel() throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(RequestEncoder())
        return channel
    }

    func encoder(_ channel: EmbeddedChannel) -> ResponseEncoder {
        try! channel.pipeline.syncOperations.handler(type: ResponseEncoder.self)
    }

    /// Writes and flushes a response part; throws what its promise failed with.
    func write(_ part: HTTPServerResponsePart, to channel: EmbeddedChannel) throws {
        try complete(part, on: channel)
    }

    /// Writes and flushes a request part; throws what its promise failed with.
    func send(_ part: HTTPClientRequestPart, to channel: EmbeddedChannel) throws {
        try complete(part, on: channel)
    }

    func complete<Part>(_ part: Part, on channel: EmbeddedChannel) throws {
        switch completion(of: part, on: channel) {
        case .success?: return
        case .failure(let error)?: throw error
        case nil: Issue.record("the write of \(part) left its promise pending")
        }
    }

    /// How the write's promise completed, or nil while it has not (an embedded channel completes
    /// everything at once, so nil means never).
    func completion<Part>(of part: Part, on channel: EmbeddedChannel) -> Result<Void, any Error>? {
        let box = ResultBox()
        channel.writeAndFlush(part).whenComplete { box.result = $0 }
        return box.result
    }

    /// Everything written so far, as text.
    func written(_ channel: EmbeddedChannel) throws -> String {
        var bytes: [UInt8] = []
        while let part = try channel.readOutbound(as: IOData.self) {
            guard case .byteBuffer(let buffer) = part else {
                Issue.record("a file region was written")
                continue
            }
            bytes += buffer.readableBytesView
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// A promise's result, set from its callback on the embedded loop (which is this thread).
private final class ResultBox: @unchecked Sendable {
    var result: Result<Void, any Error>?
}
