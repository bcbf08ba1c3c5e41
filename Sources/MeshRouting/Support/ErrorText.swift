// What system and codec errors mean, in the words meshd answers and logs with: one table per
// place an error comes from (binding a listener, connecting to an endpoint, the upstream's bytes);
// what the HTTP/1 decoder's errors mean for a client is MeshHTTP1's (DecoderErrorText.swift).

#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import NIOHTTP1
import NIOPosix

/// Why a listener could not bind.
package enum BindErrorText {
    package static func describe(_ error: any Error) -> String {
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

/// A connection was made but its protocol did not get ready (a TLS handshake) within the
/// connect timeout.
package struct ReadinessTimeout: Error, CustomStringConvertible {
    package var milliseconds: Int64
    package var description: String { "connected, but the TLS handshake did not finish within the connect timeout (\(milliseconds) ms)" }
}

/// Why a connection to an endpoint failed.
enum ConnectErrorText {
    static func isTimeout(_ error: any Error) -> Bool {
        if error is ReadinessTimeout { return true }
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
        // swift-nio-ssl's: the endpoint closed its TLS connection without close_notify.
        if String(describing: error) == "uncleanShutdown" { return "the endpoint closed the TLS connection (without close_notify)" }
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
