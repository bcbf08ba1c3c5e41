// `io.l5d.recentRequests`: a sample of recent requests kept in memory for the admin port's
// `/requests`, for a quick look at what is flowing without a tracing system.

import MeshCore
import Synchronization

public final class RecentRequests: Sendable {
    public struct Entry: Sendable {
        public var uptimeNanos: UInt64
        public var router: String
        public var method: String
        public var uri: String
        public var host: String
        public var status: Int
        public var durationNanos: Int64
        public var client: String
        public var endpoint: String

        public init(uptimeNanos: UInt64, router: String, method: String, uri: String, host: String, status: Int,
                    durationNanos: Int64, client: String, endpoint: String) {
            self.uptimeNanos = uptimeNanos
            self.router = router
            self.method = method
            self.uri = uri
            self.host = host
            self.status = status
            self.durationNanos = durationNanos
            self.client = client
            self.endpoint = endpoint
        }
    }

    public let sampleRate: Double
    public let capacity: Int
    private let entries = Mutex<[Entry]>([])

    public init(sampleRate: Double, capacity: Int) {
        self.sampleRate = sampleRate
        self.capacity = capacity
    }

    /// Whether to keep this request: a draw against `sampleRate`.
    @inlinable
    public func shouldSample(_ random: inout SplitMix64) -> Bool {
        sampleRate >= 1 || (sampleRate > 0 && Double(random.next() >> 11) / Double(1 << 53) < sampleRate)
    }

    public func record(_ entry: Entry) {
        entries.withLock { entries in
            entries.append(entry)
            if entries.count > capacity { entries.removeFirst(entries.count - capacity) }
        }
    }

    /// The kept requests, newest first.
    public var snapshot: [Entry] { entries.withLock { $0.reversed() } }
}
