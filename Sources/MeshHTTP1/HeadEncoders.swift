// HTTP/1.1 encoders for the data plane: the same framing as NIO's `HTTPRequestEncoder` and
// `HTTPResponseEncoder` (RFC 9112 §6: Content-Length or chunked, no body for HEAD, CONNECT,
// 1xx, 204 and 304), with a head serialiser that sizes the header block once and copies each
// name and value into it with one `memcpy`. NIO's writes every piece of every header through its own
// bounds-checked `ByteBuffer` call, which made serialising heads the largest single cost of a
// proxied request (docs/performance.md).

import MeshRouting
import NIOCore
import NIOHTTP1

/// Body framing chosen for the message being written.
private enum Framing {
    case chunked
    case contentLength
    case neither
}

/// Whether a response may carry a body.
private enum BodyExpectation {
    case no
    case yes
}

/// Makes a response head's framing headers agree with whether it has a body (as NIO does).
private func frame(_ headers: inout HTTPHeaders, expecting body: BodyExpectation, version: HTTPVersion) -> Framing {
    switch body {
    case .no:
        if headers.contains(name: "content-length") { headers.remove(name: "content-length") }
        if headers.contains(name: "transfer-encoding") { headers.remove(name: "transfer-encoding") }
        return .neither
    case .yes:
        if headers.contains(name: "content-length") {
            if headers.contains(name: "transfer-encoding") { headers.remove(name: "transfer-encoding") }
            return .contentLength
        }
        guard version.major == 1 && version.minor >= 1 else { return .neither }
        headers.replaceOrAdd(name: "transfer-encoding", value: "chunked")
        return .chunked
    }
}

/// Body parts and trailers, shared by both encoders.
///
/// Small parts written without a promise are gathered into one buffer, written when something
/// else is (a large part, a head, the end), at a flush, or at 16 KiB: a body of many tiny chunks
/// would otherwise become three writes per chunk in NIO's queue, whose writability watermark
/// counts bytes, not writes — a few bytes each holding a hundred bytes of bookkeeping.
private struct BodyWriter {
    var chunked = false
    private var gathered: ByteBuffer?
    /// Whether `gathered` is a buffer of the writer's own (else a part held as it came).
    private var gatheredIsOwned = false

    static let smallPart = 1024
    static let gatherLimit = 16 * 1024

    mutating func write(_ part: IOData, context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
        let size = part.readableBytes
        if promise == nil, size < Self.smallPart, case .byteBuffer(var bytes) = part {
            guard size > 0 else { return }
            if !chunked, gathered == nil {
                // Often the only part (a short response): held as it is, not copied.
                gathered = bytes
                gatheredIsOwned = false
                return
            }
            var buffer: ByteBuffer
            if let held = gathered, gatheredIsOwned {
                buffer = held
                gathered = nil  // one reference while it grows
            } else {
                buffer = context.channel.allocator.buffer(capacity: chunked && gathered == nil ? size + 16 : 4096)
                if var held = gathered { buffer.writeBuffer(&held) }
            }
            if chunked {
                buffer.writeHexadecimal(size)
                buffer.writeStaticString("\r\n")
                buffer.writeBuffer(&bytes)
                buffer.writeStaticString("\r\n")
            } else {
                buffer.writeBuffer(&bytes)
            }
            gathered = buffer
            gatheredIsOwned = true
            if buffer.readableBytes >= Self.gatherLimit { writeGathered(context: context) }
            return
        }
        writeGathered(context: context)
        guard chunked && size > 0 else {
            // Empty parts are not framed: an empty chunk would end the body.
            context.write(NIOAny(part), promise: promise)
            return
        }
        var prefix = context.channel.allocator.buffer(capacity: 24)
        prefix.writeHexadecimal(size)
        prefix.writeStaticString("\r\n")
        context.write(NIOAny(IOData.byteBuffer(prefix)), promise: nil)
        context.write(NIOAny(part), promise: nil)
        var suffix = context.channel.allocator.buffer(capacity: 2)
        suffix.writeStaticString("\r\n")
        context.write(NIOAny(IOData.byteBuffer(suffix)), promise: promise)
    }

    /// A message's head: held, so that a small body (and the end) go out in the same write —
    /// one TLS record, one iovec — unless a promise wants to know when it is written.
    mutating func writeHead(_ head: ByteBuffer, context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
        writeGathered(context: context)
        guard promise == nil else {
            context.write(NIOAny(IOData.byteBuffer(head)), promise: promise)
            return
        }
        gathered = head
        gatheredIsOwned = true
    }

    /// Writes what was gathered, ahead of whatever comes next.
    mutating func writeGathered(context: ChannelHandlerContext) {
        guard let buffer = gathered else { return }
        gathered = nil
        context.write(NIOAny(IOData.byteBuffer(buffer)), promise: nil)
    }

    /// Ends the message; the next one starts unchunked until its head says otherwise.
    mutating func end(_ trailers: HTTPHeaders?, context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
        writeGathered(context: context)
        defer { chunked = false }
        if chunked {
            var buffer = context.channel.allocator.buffer(capacity: trailers == nil ? 5 : 256)
            buffer.writeStaticString("0\r\n")
            if let trailers {
                buffer.writeHeaderBlock(trailers)
            } else {
                buffer.writeStaticString("\r\n")
            }
            context.write(NIOAny(IOData.byteBuffer(buffer)), promise: promise)
        } else if let promise {
            // Nothing to write, but the promise completes in order with the writes before it.
            context.write(NIOAny(IOData.byteBuffer(context.channel.allocator.buffer(capacity: 0))), promise: promise)
        }
    }
}

/// The client-facing side: serialises `HTTPServerResponsePart`s. `ProxyServerHandler` tells it
/// the method of every request it reads, in order, so that responses to HEAD and CONNECT go out
/// without a body.
final class ResponseEncoder: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = IOData

    private var body = BodyWriter()
    private var suppressBody = false
    private var requestMethods = CircularBuffer<HTTPMethod>(initialCapacity: 4)

    /// The method of a request read from the client, whose response comes later.
    func recordRequestMethod(_ method: HTTPMethod) {
        requestMethods.append(method)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        encode(unwrapOutboundIn(data), context: context, promise: promise)
    }

    func flush(context: ChannelHandlerContext) {
        body.writeGathered(context: context)
        context.flush()
    }

    /// Writes one part through `context` (this encoder's own). `ProxyServerHandler` calls it
    /// directly: going through the pipeline costs a dynamic cast of the part out of its
    /// `NIOAny` box, about 250 instructions a part (docs/performance.md).
    func encode(_ part: HTTPServerResponsePart, context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
        switch part {
        case .head(var head):
            let code = head.status.code
            let interim = code >= 100 && code < 200 && code != 101
            var connect = false
            if !interim, let method = requestMethods.popFirst() {
                suppressBody = method == .HEAD || method == .CONNECT
                connect = method == .CONNECT
            }
            let expectation: BodyExpectation = connect || !head.status.mayHaveResponseBody ? .no : .yes
            let framing = frame(&head.headers, expecting: expectation, version: head.version)
            body.chunked = !suppressBody && framing == .chunked
            body.writeGathered(context: context)
            var buffer = context.channel.allocator.buffer(capacity: 512)
            buffer.writeStatusLine(head)
            buffer.writeHeaderBlock(head.headers)
            body.writeHead(buffer, context: context, promise: promise)
        case .body(let part):
            if suppressBody {
                promise?.fail(NIOHTTPResponseEncoderError.responseBodyNotAllowed)
            } else {
                body.write(part, context: context, promise: promise)
            }
        case .end(let trailers):
            suppressBody = false
            body.end(trailers, context: context, promise: promise)
        }
    }
}

/// The upstream-facing side: serialises `HTTPClientRequestPart`s, framed as their heads say.
final class RequestEncoder: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = IOData

    private var body = BodyWriter()

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        encode(unwrapOutboundIn(data), context: context, promise: promise)
    }

    func flush(context: ChannelHandlerContext) {
        body.writeGathered(context: context)
        context.flush()
    }

    /// Writes one part through `context` (this encoder's own); `UpstreamHandler` calls it
    /// directly, as `ProxyServerHandler` does `ResponseEncoder`'s.
    func encode(_ part: HTTPClientRequestPart, context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
        switch part {
        case .head(let head):
            // The head's framing was decided once, in `MessageRewriting.upstreamRequest`, and is
            // written as it is: guessing again here from the method (as NIO's encoder does) once
            // dropped the framing of a body the request did have.
            body.chunked = head.headers.contains(name: "transfer-encoding")
            body.writeGathered(context: context)
            var buffer = context.channel.allocator.buffer(capacity: head.uri.utf8.count + 512)
            buffer.writeRequestLine(head)
            buffer.writeHeaderBlock(head.headers)
            body.writeHead(buffer, context: context, promise: promise)
        case .body(let part):
            body.write(part, context: context, promise: promise)
        case .end(let trailers):
            body.end(trailers, context: context, promise: promise)
        }
    }
}

extension HTTPHeaders {
    /// Bytes of the header lines and the blank line after them.
    fileprivate var serializedSize: Int {
        var size = 2
        for (name, value) in self { size &+= name.utf8.count &+ value.utf8.count &+ 4 }
        return size
    }
}

extension ByteBuffer {
    /// `name: value` lines and the blank line that ends a head, sized once and copied in.
    mutating func writeHeaderBlock(_ headers: HTTPHeaders) {
        let size = headers.serializedSize
        writeWithUnsafeMutableBytes(minimumWritableBytes: size) { output in
            var offset = 0
            for (name, value) in headers {
                offset = output.copyUTF8(of: name, at: offset)
                output[offset] = UInt8(ascii: ":")
                output[offset &+ 1] = UInt8(ascii: " ")
                offset = output.copyUTF8(of: value, at: offset &+ 2)
                output[offset] = UInt8(ascii: "\r")
                output[offset &+ 1] = UInt8(ascii: "\n")
                offset &+= 2
            }
            output[offset] = UInt8(ascii: "\r")
            output[offset &+ 1] = UInt8(ascii: "\n")
            return offset &+ 2
        }
    }

    /// `HTTP/1.1 200 OK` and its line end; the reason phrase is the standard one for the code.
    mutating func writeStatusLine(_ head: HTTPResponseHead) {
        writeVersion(head.version)
        writeInteger(UInt8(ascii: " "))
        let code = Int(head.status.code)
        if code >= 100 && code <= 999 {
            writeInteger(UInt8(48 + code / 100))
            writeInteger(UInt8(48 + code / 10 % 10))
            writeInteger(UInt8(48 + code % 10))
        } else {
            writeString(String(code))
        }
        writeInteger(UInt8(ascii: " "))
        writeString(head.status.reasonPhrase)
        writeStaticString("\r\n")
    }

    /// `GET /path HTTP/1.1` and its line end.
    mutating func writeRequestLine(_ head: HTTPRequestHead) {
        writeString(head.method.rawValue)
        writeInteger(UInt8(ascii: " "))
        writeString(head.uri)
        writeInteger(UInt8(ascii: " "))
        writeVersion(head.version)
        writeStaticString("\r\n")
    }

    private mutating func writeVersion(_ version: HTTPVersion) {
        if version.major == 1 && version.minor == 1 {
            writeStaticString("HTTP/1.1")
        } else if version.major == 1 && version.minor == 0 {
            writeStaticString("HTTP/1.0")
        } else {
            writeStaticString("HTTP/")
            writeString(String(version.major))
            writeStaticString(".")
            writeString(String(version.minor))
        }
    }

    /// A chunk size in lower-case hexadecimal.
    fileprivate mutating func writeHexadecimal(_ value: Int) {
        writeString(String(value, radix: 16))
    }
}

extension UnsafeMutableRawBufferPointer {
    /// Copies the UTF-8 bytes of `text` to `offset`; returns the offset after them. Reads the
    /// string's own storage in place (no copy of the string, so no retain of it).
    fileprivate func copyUTF8(of text: String, at offset: Int) -> Int {
        let copied = text.utf8.withContiguousStorageIfAvailable { bytes -> Int in
            guard let source = bytes.baseAddress, bytes.count > 0 else { return offset }
            (self.baseAddress! + offset).copyMemory(from: source, byteCount: bytes.count)
            return offset &+ bytes.count
        }
        if let copied { return copied }
        var index = offset
        for byte in text.utf8 {
            self[index] = byte
            index &+= 1
        }
        return index
    }
}
