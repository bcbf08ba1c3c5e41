// HTTP/1.1 to endpoints: each pooled connection gets meshd's request encoder and an
// `UpstreamHandler`, which parses responses itself (ResponseParser.swift) and is the connection
// driver exchanges lease.

import MeshConfig
import MeshCore
import MeshRouting
import NIOCore

package struct HTTP1Upstream: UpstreamProtocol, UpstreamFactory {
    package init() {}

    package func configure(_ channel: any Channel) throws {
        let encoder = RequestEncoder()
        try channel.pipeline.syncOperations.addHandlers([encoder, UpstreamHandler(encoder: encoder)])
    }

    package func connection(of channel: any Channel) -> (any PoolableConnection)? {
        try? channel.pipeline.syncOperations.handler(type: UpstreamHandler.self)
    }

    /// Plain HTTP/1.1 for every client.
    package func upstream(for client: Path, params: ClientParams) -> any UpstreamProtocol { self }
}

extension UpstreamHandler: PoolableConnection {}
