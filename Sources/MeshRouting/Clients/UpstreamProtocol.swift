// How the connections of an endpoint pool speak: what a freshly connected channel is given, and
// the connection driver the pool then lends to exchanges. HTTP/1 (MeshHTTP1) is the one today;
// client TLS goes in front of one (its handler first in the pipeline), HTTP/2 adds one. The pool
// itself (EndpointPool.swift) knows sockets, limits and idle timers, never a protocol.

import NIOCore

package protocol UpstreamProtocol: Sendable {
    /// Sets up a new connection's pipeline; runs on the channel's event loop.
    func configure(_ channel: any Channel) throws
    /// The connection driver `configure` installed, on the channel's event loop; nil when the
    /// pipeline no longer has it (the connection closed at once).
    func connection(of channel: any Channel) -> (any PoolableConnection)?
}

/// An upstream connection that can wait in a pool.
package protocol PoolableConnection: UpstreamConnection {
    /// Called once if the connection closes while idle in its pool.
    var onIdleClose: (() -> Void)? { get set }
}
