// Host-name lookups for `/$/inet/HOST/PORT`, whose HOST can come from a request's Host header
// (`/$/io.buoyant.hostportPfx`). getaddrinfo blocks, so lookups run off the event loops — but
// not one thread per name: at most `workers` run at once, and at most `capacity` wait. A lookup
// whose endpoint set nobody holds any more by its turn is skipped; past the capacity, the newest
// is refused at once (its name fails), so that a flood of invented names costs bounded memory and
// bounded DNS traffic. A name that fails (it does not resolve, or the queue was full) is tried
// again after `retryAfter`, for as long as someone holds its endpoint set, so that a transient
// failure does not stick to a name that is still being routed to.

import Dispatch
import MeshCore
import NIOConcurrencyHelpers

final class ResolverQueue: Sendable {
    private struct Pending {
        let host: String
        let port: Int
        weak var target: Watchable<Addr>?
    }

    private struct State {
        var waiting: [Pending] = []
        var running = 0
    }

    let workers: Int
    let capacity: Int
    let retryAfter: DispatchTimeInterval
    private let state = NIOLockedValueBox(State())
    private let queue = DispatchQueue(label: "meshd.resolver", attributes: .concurrent)

    init(workers: Int = 4, capacity: Int = 1024, retryAfter: DispatchTimeInterval = .seconds(5)) {
        self.workers = workers
        self.capacity = capacity
        self.retryAfter = retryAfter
    }

    /// Resolves `host` later, if `target` still lives then (after a failure or a refusal).
    func retryLater(_ host: String, port: Int, into target: Watchable<Addr>) {
        queue.asyncAfter(deadline: .now() + retryAfter) { [weak target, self] in
            guard let target else { return }
            if !resolve(host, port: port, into: target) { retryLater(host, port: port, into: target) }
        }
    }

    /// Resolves `host` and publishes the endpoint (or the failure) to `target`. False, with
    /// nothing published, when the queue is full.
    func resolve(_ host: String, port: Int, into target: Watchable<Addr>) -> Bool {
        let startWorker = state.withLockedValue { state -> Bool? in
            if state.waiting.count >= capacity {
                state.waiting.removeAll { $0.target == nil }
                if state.waiting.count >= capacity { return nil }
            }
            state.waiting.append(Pending(host: host, port: port, target: target))
            guard state.running < workers else { return false }
            state.running += 1
            return true
        }
        guard let startWorker else { return false }
        if startWorker { queue.async { self.work() } }
        return true
    }

    /// Runs lookups until none wait.
    private func work() {
        while let next = state.withLockedValue({ state -> Pending? in
            while !state.waiting.isEmpty {
                let pending = state.waiting.removeFirst()
                if pending.target != nil { return pending }
            }
            state.running -= 1
            return nil
        }) {
            let address = HostResolver.resolve(next.host)
            guard let target = next.target else { continue }
            if let address {
                target.set(.bound([Endpoint(host: address, port: next.port)]))
            } else {
                target.set(.failed("host \(next.host) does not resolve"))
                retryLater(next.host, port: next.port, into: target)
            }
        }
    }

    /// Lookups waiting for a worker.
    var waitingCount: Int { state.withLockedValue { $0.waiting.count } }
}
