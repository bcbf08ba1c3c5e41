// The two edges of an exchange, as small protocols: the client side of one request
// (`Downstream`: an HTTP/1 connection now, an HTTP/2 stream later) and the connection an
// attempt leased (`UpstreamConnection`: a pooled HTTP/1 connection now, an HTTP/2 stream
// later). The exchange (Exchange.swift) drives both from its state machine and knows nothing
// of how either frames messages. Loop-confined, like the exchange.

import MeshCore
import NIOCore
import NIOHTTP1

/// The client side of one request.
package protocol Downstream: AnyObject {
    var eventLoop: any EventLoop { get }
    /// Per-connection randomness (request ids, samples, the exchange's backoff seed).
    var random: SplitMix64 { get set }
    /// Whether the client can take more bytes now.
    var isWritable: Bool { get }
    /// An informational (1xx) head from the upstream; dropped where the protocol cannot carry it.
    func forwardInformational(_ head: HTTPResponseHead)
    /// The upstream's response head, for the client: the driver rewrites what its protocol
    /// needs (hop-by-hop headers, connection reuse). `clientMayStillSendBody`: the client
    /// waits for 100 Continue and sent no body, so its stream cannot carry another request.
    func forwardHead(_ head: HTTPResponseHead, responseClass: ResponseClass, clientMayStillSendBody: Bool)
    func forwardBody(_ body: ByteBuffer)
    /// The response is complete.
    func endResponse(trailers: HTTPHeaders?)
    func flush()
    /// meshd's own answer instead of the upstream's.
    func respond(_ error: ProxyError, clientMayStillSendBody: Bool)
    /// The response began and cannot be completed: break the client's stream.
    func abort()
    /// Lets a read held back for the exchange through (a connection came, the upstream drained).
    func resumeReads()
    /// The exchange is over; `requestEnded`: the client had sent all of the request.
    func exchangeFinished(_ exchange: Exchange, requestEnded: Bool)
}

/// A connection (or stream) an attempt sends its request on and reads its response from.
package protocol UpstreamConnection: AnyObject {
    var isActive: Bool { get }
    var isWritable: Bool { get }
    /// Whether it may carry another exchange after the current one.
    var reusable: Bool { get }
    /// Exchanges it has carried, the current one included.
    var exchanges: Int { get }
    /// Whether any byte of the current response has arrived.
    var responseStarted: Bool { get }
    /// Starts an exchange: the response goes to `receiver`.
    func attach(_ receiver: UpstreamResponseReceiver)
    /// Ends the exchange; the connection goes back to its pool or closes.
    func detach()
    func send(_ part: HTTPClientRequestPart)
    func flush()
    /// Lets a read held back while the client could not take more through.
    func resumeReading()
}

/// The side of an exchange that consumes an upstream response. Loop-confined.
package protocol UpstreamResponseReceiver: AnyObject {
    func upstreamReceived(head: HTTPResponseHead)
    func upstreamReceived(body: ByteBuffer)
    func upstreamReceived(end: HTTPHeaders?)
    /// The end of a batch of reads: the moment to flush what was forwarded.
    func upstreamReadComplete()
    func upstreamFailed(_ error: any Error)
    func upstreamWritabilityChanged(isWritable: Bool)
    /// Whether the client can take more bytes; reads from the upstream wait while it cannot.
    var downstreamIsWritable: Bool { get }
}
