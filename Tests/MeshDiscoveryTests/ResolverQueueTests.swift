@testable import MeshDiscovery
import Dispatch
import MeshCore
import Testing

@Suite struct ResolverQueueTests {
    @Test func resolvesNamesAFewAtATime() {
        let queue = ResolverQueue(workers: 2, capacity: 16)
        let done = DispatchSemaphore(value: 0)
        let targets = (0..<6).map { _ in Watchable<Addr>(.pending) }
        let observations = targets.map { target in
            target.observe { addr in if case .pending = addr {} else { done.signal() } }
        }
        for target in targets { #expect(queue.resolve("localhost", port: 80, into: target)) }
        for _ in targets { #expect(done.wait(timeout: .now() + 10) == .success) }
        for target in targets {
            guard case .bound(let endpoints) = target.value else {
                Issue.record("localhost did not resolve: \(target.value)")
                continue
            }
            #expect(endpoints.map(\.port) == [80])
        }
        _ = observations
    }

    @Test func aFullQueueRefusesAtOnce() {
        let queue = ResolverQueue(workers: 1, capacity: 0)
        let target = Watchable<Addr>(.pending)
        #expect(!queue.resolve("localhost", port: 80, into: target))
        if case .pending = target.value {} else { Issue.record("a refused lookup publishes nothing") }
    }

    @Test func aNameNobodyHoldsIsNotLookedUp() {
        let queue = ResolverQueue(workers: 1, capacity: 4)
        weak var gone: Watchable<Addr>?
        do {
            let target = Watchable<Addr>(.pending)
            gone = target
            _ = queue.resolve("localhost", port: 80, into: target)
        }
        #expect(gone == nil, "the queue holds its targets weakly")
    }
}

@Suite struct ResolverRetryTests {
    /// A name refused (or failed) is tried again while someone holds its endpoint set.
    @Test func aRefusedNameIsTriedAgainLater() {
        let queue = ResolverQueue(workers: 1, capacity: 1, retryAfter: .milliseconds(50))
        let blocker = Watchable<Addr>(.pending)
        let target = Watchable<Addr>(.pending)
        let bound = DispatchSemaphore(value: 0)
        let observation = target.observe { addr in if case .bound = addr { bound.signal() } }
        // Fill the one waiting place (the worker may or may not have taken it yet), then ask.
        _ = queue.resolve("localhost", port: 1, into: blocker)
        if !queue.resolve("localhost", port: 80, into: target) {
            target.set(.failed("full"))
            queue.retryLater("localhost", port: 80, into: target)
        }
        #expect(bound.wait(timeout: .now() + 10) == .success)
        _ = observation
        _ = blocker
    }
}
