// HTTP/1.1 responses from upstreams, parsed straight from the bytes `UpstreamHandler` reads.
//
// NIO's decoder (llhttp behind `ByteToMessageHandler`) cost about 12,000 instructions of a
// proxied request's 84,000: callbacks per header fragment, a generic handler that is not
// specialised for it, and every message part boxed into an `NIOAny` and sent down the pipeline.
// A response head is small and its grammar simple, so this parser reads it whole once it has
// arrived, and hands heads, body slices and ends to the exchange directly.
//
// It is as strict as llhttp in its default mode: a status line `HTTP/1.x NNN reason`, header
// names made of token characters with the colon right after them, no control characters in
// values, no obs-fold, CRLF line ends; Content-Length values that are digits and agree;
// Content-Length together with Transfer-Encoding refused; chunk sizes in hex with optional
// extensions. Anything else is an error, and the exchange answers 502 (RFC 9112 §6.3 for the
// framing rules; a response to HEAD, a 1xx, 204 or 304 has no body; a response with neither
// Content-Length nor chunked ends when the connection closes).

#if canImport(Glibc)
import Glibc
#endif
import MeshRouting
import NIOCore
import NIOHTTP1

struct ResponseParser {
    enum Event {
        /// `keepAlive`: whether the connection may carry another exchange after this response.
        case head(HTTPResponseHead, keepAlive: Bool)
        case body(ByteBuffer)
        case end(HTTPHeaders?)
    }

    private enum State {
        case head
        case fixed(remaining: Int)
        case chunkSize
        case chunkData(remaining: Int)
        case chunkDataEnd
        case trailers
        case untilClose
        /// After a 101 or an error: nothing more is read from this connection.
        case done
    }

    /// Past this, a head (or the trailers) is refused: it bounds memory, as NIO's decoder's
    /// limits did.
    static let maxHeadBytes = 80 * 1024

    private var state = State.head
    /// Bytes read but not yet parsed (an incomplete head, chunk-size line or trailer block).
    private var pending: ByteBuffer?
    /// Methods of requests sent whose responses have not begun, in order.
    private var methods = CircularBuffer<HTTPMethod>(initialCapacity: 2)

    /// Whether the response now being read ends only when the connection closes.
    private var readsUntilClose: Bool {
        if case .untilClose = state { return true }
        return false
    }

    /// Bytes read but not yet parsed into anything (part of a head, a chunk-size line, trailers).
    var hasBufferedBytes: Bool { pending != nil }

    /// A request head went out on the connection.
    mutating func requestSent(_ method: HTTPMethod) {
        methods.append(method)
    }

    /// Parses what arrived into `events`: every head, body slice and end, in order. Nothing is
    /// called back while parsing, so that handling an event may send the next request (which
    /// tells this parser its method) without reentering it.
    mutating func feed(_ bytes: ByteBuffer, into events: inout [Event]) throws {
        var input: ByteBuffer
        if var buffered = pending {
            pending = nil
            var bytes = bytes
            buffered.writeBuffer(&bytes)
            input = buffered
        } else {
            input = bytes
        }
        while input.readableBytes > 0 {
            switch state {
            case .done:
                return
            case .head:
                guard let head = try takeHead(&input) else { return keep(input) }
                emitHead(head, into: &events)
            case .fixed(let remaining):
                let slice = input.readSlice(length: min(remaining, input.readableBytes))!
                events.append(.body(slice))
                if remaining == slice.readableBytes {
                    finishMessage(nil, into: &events)
                } else {
                    state = .fixed(remaining: remaining - slice.readableBytes)
                }
            case .untilClose:
                events.append(.body(input.readSlice(length: input.readableBytes)!))
            case .chunkSize:
                guard let line = try takeLine(&input, limit: 1024) else { return keep(input) }
                let size = try Self.chunkSize(line)
                state = size == 0 ? .trailers : .chunkData(remaining: size)
            case .chunkData(let remaining):
                let slice = input.readSlice(length: min(remaining, input.readableBytes))!
                events.append(.body(slice))
                state = remaining == slice.readableBytes ? .chunkDataEnd : .chunkData(remaining: remaining - slice.readableBytes)
            case .chunkDataEnd:
                guard input.readableBytes >= 2 else { return keep(input) }
                guard input.readInteger(as: UInt16.self) == 0x0D0A else { throw HTTPParserError.invalidChunkSize }
                state = .chunkSize
            case .trailers:
                guard let block = try takeBlock(&input, limit: Self.maxHeadBytes) else { return keep(input) }
                let fields = try Self.fields(block)
                finishMessage(fields.isEmpty ? nil : HTTPHeaders(fields), into: &events)
            }
        }
    }

    /// The connection closed: ends a response read until close; an error if one was cut short.
    mutating func closed(into events: inout [Event]) throws {
        switch state {
        case .untilClose:
            state = .done
            events.append(.end(nil))
        case .head where pending == nil, .done:
            break
        default:
            state = .done
            throw HTTPParserError.invalidEOFState
        }
    }

    /// The rest of the bytes wait for more.
    private mutating func keep(_ input: ByteBuffer) {
        if input.readableBytes > 0 { pending = input }
    }

    private mutating func finishMessage(_ trailers: HTTPHeaders?, into events: inout [Event]) {
        state = .head
        events.append(.end(trailers))
    }

    // MARK: heads

    private struct Head {
        let head: HTTPResponseHead
        let keepAlive: Bool
        let framing: Framing
    }

    /// Decides how the response's body is framed, then emits its head (and its end when it has
    /// no body).
    private mutating func emitHead(_ parsed: Head, into events: inout [Event]) {
        let code = Int(parsed.head.status.code)
        var bodiless = false
        var reusable = parsed.keepAlive
        // A 1xx other than 101 is followed by more heads for the same request.
        if code >= 200 || code == 101 {
            let method = methods.popFirst()
            if code == 101 {
                state = .done
            } else if method == .HEAD || method == .CONNECT || code == 204 || code == 304 {
                bodiless = true
                // A bodiless response that declares a body: if the upstream sends one anyway,
                // and late, it would be read as the answer to the next request on this
                // connection. Not reused, it cannot be.
                if parsed.framing.transferEncoded || (parsed.framing.contentLength ?? 0) > 0 { reusable = false }
            } else if parsed.framing.transferEncoded {
                state = parsed.framing.chunked ? .chunkSize : .untilClose
            } else if let length = parsed.framing.contentLength {
                if length > 0 { state = .fixed(remaining: length) } else { bodiless = true }
            } else {
                state = .untilClose
            }
        }
        events.append(.head(parsed.head, keepAlive: reusable && !readsUntilClose))
        if bodiless { finishMessage(nil, into: &events) }
    }

    private mutating func takeHead(_ input: inout ByteBuffer) throws -> Head? {
        guard !methods.isEmpty else {
            // Bytes nobody asked for.
            state = .done
            throw HTTPParserError.invalidInternalState
        }
        // Stray line ends between messages are skipped, as llhttp does.
        while input.readableBytes >= 2, input.getInteger(at: input.readerIndex, as: UInt16.self) == 0x0D0A {
            input.moveReaderIndex(forwardBy: 2)
        }
        guard input.readableBytes > 0, let block = try takeBlock(&input, limit: Self.maxHeadBytes) else { return nil }
        return try Self.parseHead(block)
    }

    /// The status line and header fields of one head (without the blank line).
    private static func parseHead(_ block: ByteBuffer) throws -> Head {
        try block.withUnsafeReadableBytes { raw -> Head in
            let bytes = raw.bindMemory(to: UInt8.self)
            guard let lineEnd = lineEnd(in: bytes, from: 0) else { throw HTTPParserError.lfExpected }
            // "HTTP/1.1 200 OK"
            guard lineEnd >= 12, bytes[0] == 0x48, bytes[1] == 0x54, bytes[2] == 0x54, bytes[3] == 0x50, bytes[4] == 0x2F,
                  bytes[5] == 0x31, bytes[6] == 0x2E, bytes[7] == 0x30 || bytes[7] == 0x31, bytes[8] == 0x20
            else { throw HTTPParserError.invalidVersion }
            let minor = Int(bytes[7] - 0x30)
            var code = 0
            for index in 9..<12 {
                let digit = bytes[index]
                guard digit >= 0x30 && digit <= 0x39 else { throw HTTPParserError.invalidStatus }
                code = code * 10 + Int(digit - 0x30)
            }
            guard code >= 100, lineEnd == 12 || bytes[12] == 0x20 else { throw HTTPParserError.invalidStatus }
            for index in 12..<lineEnd where !isFieldValueByte(bytes[index]) { throw HTTPParserError.invalidCharactersUsed }
            var framing = Framing()
            let fields = try parseFields(bytes, from: lineEnd + 2, framing: &framing)
            if framing.transferEncoded && framing.contentLength != nil { throw HTTPParserError.unexpectedContentLength }
            // Forwarding the body without its coding would hand the client gzip as plain bytes.
            if framing.otherCoding { throw UnsupportedTransferCoding() }
            let head = HTTPResponseHead(
                version: minor == 1 ? .http1_1 : .http1_0, status: HTTPResponseStatus(statusCode: code), headers: HTTPHeaders(fields)
            )
            // As NIO decides it: `close` wins, then `keep-alive`, else the version's default.
            let keepAlive = framing.connectionClose ? false : (framing.connectionKeepAlive || minor == 1)
            return Head(head: head, keepAlive: keepAlive, framing: framing)
        }
    }

    /// Header (or trailer) fields of a block that ends without its blank line.
    private static func fields(_ block: ByteBuffer) throws -> [(String, String)] {
        try block.withUnsafeReadableBytes { raw in
            var framing = Framing()
            return try parseFields(raw.bindMemory(to: UInt8.self), from: 0, framing: &framing)
        }
    }

    /// What the framing headers say, read from their bytes as the fields are parsed.
    private struct Framing {
        var contentLength: Int?
        var transferEncoded = false
        var chunked = false
        /// A coding other than chunked (gzip, deflate…), which meshd does not decode.
        var otherCoding = false
        var connectionClose = false
        var connectionKeepAlive = false
    }

    private static let contentLengthName = Array("content-length".utf8)
    private static let transferEncodingName = Array("transfer-encoding".utf8)
    private static let connectionName = Array("connection".utf8)
    private static let closeOption = Array("close".utf8)
    private static let chunkedOption = Array("chunked".utf8)
    private static let keepAliveOption = Array("keep-alive".utf8)

    /// Whether `bytes[start..<end]` is `lowercase`, ignoring ASCII case.
    private static func nameIs(_ lowercase: [UInt8], _ bytes: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int) -> Bool {
        guard end - start == lowercase.count else { return false }
        for offset in 0..<lowercase.count where bytes[start + offset] | 0x20 != lowercase[offset] { return false }
        return true
    }

    /// Per byte: 1 when it may be in a header name (tchar), 2 when it may be in a value.
    private static let byteClasses: [UInt8] = (0...255).map { byte in
        (isTokenByte(UInt8(byte)) ? 1 : 0) | (isFieldValueByte(UInt8(byte)) ? 2 : 0)
    }

    /// Calls `body` with the bounds of each comma-separated option of a value, trimmed; in place.
    private static func forEachOption(_ bytes: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int, _ body: (Int, Int) -> Void) {
        var optionStart = start
        while optionStart <= end {
            var optionEnd = optionStart
            while optionEnd < end && bytes[optionEnd] != 0x2C { optionEnd += 1 }
            var first = optionStart
            var last = optionEnd
            while first < last && (bytes[first] == 0x20 || bytes[first] == 0x09) { first += 1 }
            while last > first && (bytes[last - 1] == 0x20 || bytes[last - 1] == 0x09) { last -= 1 }
            body(first, last)
            optionStart = optionEnd + 1
        }
    }

    private static func parseFields(_ bytes: UnsafeBufferPointer<UInt8>, from start: Int, framing: inout Framing) throws -> [(String, String)] {
        try byteClasses.withUnsafeBufferPointer { classes in
            try parseFields(bytes, from: start, framing: &framing, classes: classes)
        }
    }

    private static func parseFields(
        _ bytes: UnsafeBufferPointer<UInt8>, from start: Int, framing: inout Framing, classes: UnsafeBufferPointer<UInt8>
    ) throws -> [(String, String)] {
        var fields: [(String, String)] = []
        fields.reserveCapacity(12)
        var lineStart = start
        while lineStart < bytes.count {
            guard let end = lineEnd(in: bytes, from: lineStart) else { throw HTTPParserError.lfExpected }
            var colon = lineStart
            while colon < end && classes[Int(bytes[colon])] & 1 != 0 { colon += 1 }
            // An empty name, a character that is not a token's (obs-fold's leading space
            // among them) or whitespace before the colon.
            guard colon > lineStart, colon < end, bytes[colon] == 0x3A else { throw HTTPParserError.invalidHeaderToken }
            var valueStart = colon + 1
            var valueEnd = end
            while valueStart < valueEnd && (bytes[valueStart] == 0x20 || bytes[valueStart] == 0x09) { valueStart += 1 }
            while valueEnd > valueStart && (bytes[valueEnd - 1] == 0x20 || bytes[valueEnd - 1] == 0x09) { valueEnd -= 1 }
            for index in valueStart..<valueEnd where classes[Int(bytes[index])] & 2 == 0 { throw HTTPParserError.invalidHeaderToken }
            let name = String(decoding: UnsafeBufferPointer(rebasing: bytes[lineStart..<colon]), as: UTF8.self)
            let value = String(decoding: UnsafeBufferPointer(rebasing: bytes[valueStart..<valueEnd]), as: UTF8.self)
            if nameIs(contentLengthName, bytes, lineStart, colon) {
                guard let length = parseLength(value), framing.contentLength == nil || framing.contentLength == length else {
                    throw HTTPParserError.invalidContentLength
                }
                framing.contentLength = length
            } else if nameIs(transferEncodingName, bytes, lineStart, colon) {
                framing.transferEncoded = true
                // The last coding decides (RFC 9112 §6.3); later headers continue the list.
                forEachOption(bytes, valueStart, valueEnd) { first, last in
                    framing.chunked = nameIs(chunkedOption, bytes, first, last)
                    if !framing.chunked { framing.otherCoding = true }
                }
            } else if nameIs(connectionName, bytes, lineStart, colon) {
                forEachOption(bytes, valueStart, valueEnd) { first, last in
                    if nameIs(closeOption, bytes, first, last) { framing.connectionClose = true }
                    if nameIs(keepAliveOption, bytes, first, last) { framing.connectionKeepAlive = true }
                }
            }
            fields.append((name, value))
            lineStart = end + 2
        }
        return fields
    }

    /// The index of the CR of the CRLF ending the line that starts at `start`. A bare LF before it
    /// is caught by the field and status checks, which refuse control characters.
    private static func lineEnd(in bytes: UnsafeBufferPointer<UInt8>, from start: Int) -> Int? {
        guard start < bytes.count, let base = bytes.baseAddress,
              let found = memchr(base + start, 0x0D, bytes.count - start)
        else { return nil }
        let index = base.distance(to: found.assumingMemoryBound(to: UInt8.self))
        return index + 1 < bytes.count && bytes[index + 1] == 0x0A ? index : nil
    }

    /// Takes a head or trailer block through its blank line; returns it without the blank line
    /// (but with the CRLF of its last field), or nil if it has not all arrived.
    private mutating func takeBlock(_ input: inout ByteBuffer, limit: Int) throws -> ByteBuffer? {
        let found = input.withUnsafeReadableBytes { raw -> Int? in
            let bytes = raw.bindMemory(to: UInt8.self)
            if bytes.count >= 2 && bytes[0] == 0x0D && bytes[1] == 0x0A { return 0 }
            guard let base = bytes.baseAddress else { return nil }
            // Each CR found by memchr: is it the start of CRLF CRLF?
            var index = 0
            while index + 3 < bytes.count, let found = memchr(base + index, 0x0D, bytes.count - index - 3) {
                index = base.distance(to: found.assumingMemoryBound(to: UInt8.self))
                if bytes[index + 1] == 0x0A && bytes[index + 2] == 0x0D && bytes[index + 3] == 0x0A { return index + 2 }
                index += 1
            }
            return nil
        }
        guard let end = found else {
            // Not yet whole: a block of `limit` bytes may have the CR of its blank line after it.
            if input.readableBytes > limit + 1 { throw HTTPParserError.headerOverflow }
            return nil
        }
        guard end <= limit else { throw HTTPParserError.headerOverflow }
        let block = input.readSlice(length: end)!
        input.moveReaderIndex(forwardBy: 2)
        return block
    }

    /// Takes one line through its CRLF, without it; nil if it has not all arrived.
    private mutating func takeLine(_ input: inout ByteBuffer, limit: Int) throws -> ByteBuffer? {
        // The same limit whether the line arrived whole or in parts: at most `limit` bytes
        // before its CRLF.
        guard let newline = input.readableBytesView.firstIndex(of: 0x0A) else {
            if input.readableBytes > limit + 1 { throw HTTPParserError.invalidChunkSize }
            return nil
        }
        let length = newline - input.readerIndex
        guard length >= 1, input.getInteger(at: newline - 1, as: UInt8.self) == 0x0D else { throw HTTPParserError.lfExpected }
        guard length - 1 <= limit else { throw HTTPParserError.invalidChunkSize }
        let line = input.readSlice(length: length - 1)!
        input.moveReaderIndex(forwardBy: 2)
        return line
    }

    /// `1a3f` or `1a3f;name=value`.
    private static func chunkSize(_ line: ByteBuffer) throws -> Int {
        var size = 0
        var digits = 0
        for byte in line.readableBytesView {
            let value: Int
            switch byte {
            case 0x30...0x39: value = Int(byte - 0x30)
            case 0x41...0x46: value = Int(byte - 0x41 + 10)
            case 0x61...0x66: value = Int(byte - 0x61 + 10)
            case 0x3B, 0x20, 0x09:
                // An extension (or whitespace before one): ignored, as llhttp does.
                guard digits > 0 else { throw HTTPParserError.invalidChunkSize }
                return size
            default:
                throw HTTPParserError.invalidChunkSize
            }
            digits += 1
            guard digits <= 15 else { throw HTTPParserError.invalidChunkSize }
            size = size * 16 + value
        }
        guard digits > 0 else { throw HTTPParserError.invalidChunkSize }
        return size
    }

    private static func parseLength(_ value: String) -> Int? {
        guard !value.isEmpty, value.utf8.count <= 18 else { return nil }
        var length = 0
        for byte in value.utf8 {
            guard byte >= 0x30 && byte <= 0x39 else { return nil }
            length = length * 10 + Int(byte - 0x30)
        }
        return length
    }

    /// RFC 9110 §5.6.2 tchar.
    private static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case 0x30...0x39, 0x41...0x5A, 0x61...0x7A: return true
        case 0x21, 0x23, 0x24, 0x25, 0x26, 0x27, 0x2A, 0x2B, 0x2D, 0x2E, 0x5E, 0x5F, 0x60, 0x7C, 0x7E: return true
        default: return false
        }
    }

    /// VCHAR, SP, HTAB and obs-text; no other control characters.
    private static func isFieldValueByte(_ byte: UInt8) -> Bool {
        byte == 0x09 || (byte >= 0x20 && byte != 0x7F)
    }
}

/// An upstream response with a transfer coding other than chunked (`Transfer-Encoding: gzip,
/// chunked`): meshd neither decodes nor forwards such codings, so the response becomes a 502.
struct UnsupportedTransferCoding: Error, CustomStringConvertible {
    var description: String { "the response uses a transfer coding other than chunked (Transfer-Encoding: gzip or similar), which meshd does not forward" }
}
