// What NIO's HTTP/1.1 request decoder's errors mean for the client, in the words meshd answers
// with (the other error tables: MeshRouting's ErrorText.swift).

import MeshRouting
import NIOHTTP1

/// What the HTTP/1.1 decoder's errors mean for the client.
enum DecoderErrorText {
    static func proxyError(for error: any Error) -> ProxyError {
        if let parser = error as? HTTPParserError {
            switch parser {
            case .headerOverflow:
                return ProxyError(.headersTooLarge, "request head is too large")
            case .invalidHeaderToken:
                return ProxyError(.badRequest, "malformed header (invalid character, obs-fold or bad name)")
            case .unexpectedContentLength, .invalidContentLength:
                return ProxyError(.badRequest, "invalid or conflicting Content-Length")
            case .invalidChunkSize:
                return ProxyError(.badRequest, "invalid chunk size in a chunked body")
            case .invalidMethod:
                return ProxyError(.badRequest, "invalid method")
            case .invalidURL:
                return ProxyError(.badRequest, "invalid request target")
            case .invalidVersion:
                return ProxyError(.badRequest, "unsupported HTTP version")
            case .lfExpected, .strictModeAssertion:
                return ProxyError(.badRequest, "malformed request (bare CR or missing LF)")
            default:
                return ProxyError(.badRequest, "malformed request: \(parser)")
            }
        }
        return ProxyError(.badRequest, "malformed request: \(error)")
    }
}
