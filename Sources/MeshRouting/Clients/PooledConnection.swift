// A connection to an endpoint, owned by that endpoint's pool and lent to one exchange at a time,
// always on its own event loop.

import NIOCore

final class PooledConnection: Sendable {
    let id: Int
    let channel: any Channel
    /// The connection's handler; only touched on `channel.eventLoop`.
    let handler: NIOLoopBound<any PoolableConnection>
    let openedAt: NIODeadline

    init(id: Int, channel: any Channel, handler: any PoolableConnection, openedAt: NIODeadline) {
        self.id = id
        self.channel = channel
        self.openedAt = openedAt
        self.handler = NIOLoopBound(handler, eventLoop: channel.eventLoop)
    }

    var eventLoop: any EventLoop { channel.eventLoop }
}
