// What system and codec errors mean, in the words meshd answers and logs with: one table per
// place an error comes from (binding a listener, connecting to an endpoint, the client's bytes,
// the upstream's bytes). Kept together so that every user-facing wording is in one file.

#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import NIOHTTP1
import NIOPosix

/// Why a listener could not bind.
enum BindErrorText {
    static func describe(_ error: any Error) -> String {
        if let io = error as? IOError {
            switch io.errnoCode {
            case EADDRINUSE: return "the address is already in use (another process, or another listener in this config)"
            case EACCES: return "permission denied (ports below 1024 need privileges)"
            case EADDRNOTAVAIL: return "the address is not available on this host"
            default: return "\(io)"
            }
        }
        return "\(error)"
    }
}

/// Why a connection to an endpoint failed.
enum ConnectErrorText {
    static func isTimeout(_ error: any Error) -> Bool {
        if let channelError = error as? ChannelError, case .connectTimeout = channelError { return true }
        if let io = error as? IOError, io.errnoCode == ETIMEDOUT { return true }
        if let multiple = error as? NIOConnectionError { return multiple.connectionErrors.contains { isTimeout($0.error) } }
        return false
    }

    static func describe(_ error: any Error) -> String {
        if let io = error as? IOError {
            switch io.errnoCode {
            case ECONNREFUSED: return "connection refused"
            case ETIMEDOUT: return "connection timed out"
            case EHOSTUNREACH: return "host unreachable"
            case ENETUNREACH: return "network unreachable"
            default: return "\(io)"
            }
        }
        if error is ChannelError, case .connectTimeout = error as! ChannelError { return "connection timed out" }
        if let multiple = error as? NIOConnectionError, let first = multiple.connectionErrors.first {
            return describe(first.error)
        }
        return "\(error)"
    }
}

/// How an upstream broke an exchange.
enum UpstreamErrorText {
    static func describe(_ error: any Error) -> String {
        if error is HTTPParserError { return "invalid HTTP response (\(error))" }
        if let io = error as? IOError {
            switch io.errnoCode {
            case ECONNRESET: return "connection reset"
            case EPIPE: return "connection closed while sending"
            default: return "\(io)"
            }
        }
        return "\(error)"
    }
}

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
