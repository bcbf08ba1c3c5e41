// How the connections of an endpoint pool speak: what a freshly connected channel is given, and
// the connection driver the pool then lends to exchanges. HTTP/1 (MeshHTTP1) is the one today;
// client TLS goes in front of one (its handler first in the pipeline), HTTP/2 adds one. The pool
// itself (EndpointPool.swift) knows sockets, limits and idle timers, never a protocol.

import MeshConfig
import MeshCore
import NIOCore

package protocol UpstreamProtocol: Sendable {
    /// Sets up a new connection's pipeline; runs on the channel's event loop.
    func configure(_ channel: any Channel) throws
    /// Completes when the connection can carry requests (a TLS handshake done), or fails with
    /// why it cannot; the pool lends it only then. On the channel's event loop.
    func ready(_ channel: any Channel) -> EventLoopFuture<Void>
    /// The connection driver `configure` installed, on the channel's event loop; nil when the
    /// pipeline no longer has it (the connection closed at once).
    func connection(of channel: any Channel) -> (any PoolableConnection)?
}

extension UpstreamProtocol {
    /// Ready once connected.
    package func ready(_ channel: any Channel) -> EventLoopFuture<Void> {
        channel.eventLoop.makeSucceededVoidFuture()
    }
}

/// Chooses how each client's connections speak, from its parameters (TLS or not, to which
/// name). Called once per client, when the client is made.
package protocol UpstreamFactory: Sendable {
    func upstream(for client: Path, params: ClientParams) -> any UpstreamProtocol
}

/// What a listener puts in front of the protocol's codec on each accepted connection (TLS).
package protocol ListenerTransport: Sendable {
    /// Adds its handlers to a new connection's pipeline, first; on the channel's event loop.
    func configure(_ channel: any Channel) throws
    /// The client's verified identity on this connection (its TLS certificate), once the
    /// handshake is done; on the channel's event loop.
    func peer(of channel: any Channel) -> PeerIdentity?
    /// This listener's own identity (its certificate's first URI SAN), for
    /// `x-forwarded-client-cert`'s `By=`.
    var ownIdentity: String? { get }
}

/// An upstream connection that can wait in a pool.
package protocol PoolableConnection: UpstreamConnection {
    /// Called once if the connection closes while idle in its pool.
    var onIdleClose: (() -> Void)? { get set }
}
