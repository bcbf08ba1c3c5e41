// HTTP/1.1 to endpoints: each pooled connection gets meshd's request encoder and an
// `UpstreamHandler`, which parses responses itself (ResponseParser.swift) and is the connection
// driver exchanges lease.

import MeshRouting
import NIOCore

package struct HTTP1Upstream: UpstreamProtocol {
    package init() {}

    package func configure(_ channel: any Channel) throws {
        let encoder = RequestEncoder()
        try channel.pipeline.syncOperations.addHandlers([encoder, UpstreamHandler(encoder: encoder)])
    }

    package func connection(of channel: any Channel) -> (any PoolableConnection)? {
        try? channel.pipeline.syncOperations.handler(type: UpstreamHandler.self)
    }
}

extension UpstreamHandler: PoolableConnection {}
