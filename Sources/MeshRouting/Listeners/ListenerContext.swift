// What every connection accepted by one listener shares: its router, its limits and counters.

import MeshConfig
import MeshCore
import MeshTelemetry
import NIOConcurrencyHelpers
import NIOCore
import Synchronization

package final class ListenerContext: Sendable {
    package let router: Router
    package let config: ServerConfig
    package let limits: RequestLimits
    package let metrics: ServerMetrics
    /// What goes in front of the codec on each connection (TLS); nil for plain TCP.
    package let transport: (any ListenerTransport)?
    /// Which client identities may call which names (`tls.allow`); nil: no rules.
    package let accessRules: AccessRules?
    /// Requests being served on this listener (for `maxConcurrentRequests`).
    private let inFlight = Atomic<Int>(0)
    /// Open client connections, so that shutdown can close what outlives the grace period.
    private let connections = NIOLockedValueBox<[ObjectIdentifier: any Channel]>([:])

    package init(router: Router, config: ServerConfig, limits: RequestLimits, metrics: ServerMetrics, transport: (any ListenerTransport)? = nil) {
        self.transport = transport
        self.accessRules = transport == nil ? nil : config.tls?.allow
        self.router = router
        self.config = config
        self.limits = limits
        self.metrics = metrics
    }

    /// Takes a request slot; false when `maxConcurrentRequests` are already being served.
    func tryStartRequest() -> Bool {
        guard let limit = config.maxConcurrentRequests else {
            inFlight.add(1, ordering: .relaxed)
            return true
        }
        while true {
            let current = inFlight.load(ordering: .relaxed)
            if current >= limit { return false }
            if inFlight.compareExchange(expected: current, desired: current + 1, ordering: .relaxed).exchanged { return true }
        }
    }

    package func requestFinished() {
        inFlight.subtract(1, ordering: .relaxed)
    }

    package var requestsInFlight: Int { inFlight.load(ordering: .relaxed) }

    package func connectionOpened(_ channel: any Channel) {
        connections.withLockedValue { $0[ObjectIdentifier(channel)] = channel }
    }

    package func connectionClosed(_ channel: any Channel) {
        connections.withLockedValue { $0[ObjectIdentifier(channel)] = nil }
    }

    /// Closes every client connection still open.
    package func closeAllConnections() {
        for channel in connections.withLockedValue({ Array($0.values) }) {
            channel.close(promise: nil)
        }
    }
}
