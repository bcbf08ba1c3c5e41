import MeshCore
import Testing

/// The pool as scripts of events and the actions they must produce.
@Suite struct ConnectionPoolStateTests {
    typealias Pool = ConnectionPoolState<String, Int, String>

    @Test func opensThenReusesOnTheSameLoop() {
        var pool = Pool(limits: .init())
        #expect(pool.leaseRequested(by: 1, on: "L1") == .connect(on: "L1", for: 1))
        #expect(pool.connectionEstablished("c1", on: "L1", for: 1, waiterStillWants: true) == .lease("c1", to: 1))
        #expect(pool.connectionReleased("c1", on: "L1", reusable: true) == .armIdleTimer("c1", token: 1))
        #expect(pool.idleCount == 1)
        #expect(pool.leaseRequested(by: 2, on: "L1") == .lease("c1", to: 2))
        // An idle connection on another loop is not used while the pool may grow.
        #expect(pool.connectionReleased("c1", on: "L1", reusable: true) == .armIdleTimer("c1", token: 2))
        #expect(pool.leaseRequested(by: 3, on: "L2") == .connect(on: "L2", for: 3))
        #expect(pool.total == 2)
    }

    @Test func leaseIdleTakesOnlyFromTheSameLoop() {
        var pool = Pool(limits: .init())
        #expect(pool.leaseIdle(on: "L1") == nil)
        _ = pool.leaseRequested(by: 1, on: "L1")
        _ = pool.connectionEstablished("c1", on: "L1", for: 1, waiterStillWants: true)
        _ = pool.connectionReleased("c1", on: "L1", reusable: true)
        #expect(pool.leaseIdle(on: "L2") == nil)
        #expect(pool.leaseIdle(on: "L1") == "c1")
        #expect(pool.leased == 1 && pool.idleCount == 0 && pool.total == 1)
    }

    @Test func fullPoolQueuesThenRejects() {
        var pool = Pool(limits: .init(maxSize: 1, maxWaiters: 1))
        #expect(pool.leaseRequested(by: 1, on: "L1") == .connect(on: "L1", for: 1))
        #expect(pool.connectionEstablished("c1", on: "L1", for: 1, waiterStillWants: true) == .lease("c1", to: 1))
        #expect(pool.leaseRequested(by: 2, on: "L1") == .queued)
        #expect(pool.leaseRequested(by: 3, on: "L1") == .reject(3))
        #expect(pool.waiterCount == 1)
        // The connection comes back and goes straight to the queued waiter.
        #expect(pool.connectionReleased("c1", on: "L1", reusable: true) == .lease("c1", to: 2))
        #expect(pool.total == 1 && pool.leased == 1)
    }

    @Test func fullPoolHandsAConnectionAcrossLoopsByReplacingIt() {
        var pool = Pool(limits: .init(maxSize: 1, maxWaiters: 5))
        _ = pool.leaseRequested(by: 1, on: "L1")
        _ = pool.connectionEstablished("c1", on: "L1", for: 1, waiterStillWants: true)
        #expect(pool.leaseRequested(by: 2, on: "L2") == .queued)
        // Released on L1 while the waiter is on L2: close it and open one on L2; the count holds.
        #expect(pool.connectionReleased("c1", on: "L1", reusable: true) == .replace("c1", connectOn: "L2", for: 2))
        #expect(pool.total == 1)
        #expect(pool.connectionEstablished("c2", on: "L2", for: 2, waiterStillWants: true) == .lease("c2", to: 2))
        // An idle connection on another loop gives up its place when the pool is full.
        _ = pool.connectionReleased("c2", on: "L2", reusable: true)
        #expect(pool.leaseRequested(by: 3, on: "L1") == .replace("c2", connectOn: "L1", for: 3))
        #expect(pool.total == 1)
    }

    @Test func unusableConnectionFreesItsPlaceForAWaiter() {
        var pool = Pool(limits: .init(maxSize: 1, maxWaiters: 5))
        _ = pool.leaseRequested(by: 1, on: "L1")
        _ = pool.connectionEstablished("c1", on: "L1", for: 1, waiterStillWants: true)
        _ = pool.leaseRequested(by: 2, on: "L1")
        #expect(pool.connectionReleased("c1", on: "L1", reusable: false) == .connect(on: "L1", for: 2))
        #expect(pool.total == 1)
    }

    @Test func connectFailureFailsOnlyItsWaiterAndLetsTheNextTry() {
        var pool = Pool(limits: .init(maxSize: 1, maxWaiters: 5))
        _ = pool.leaseRequested(by: 1, on: "L1")
        #expect(pool.leaseRequested(by: 2, on: "L1") == .queued)
        #expect(pool.connectFailed(for: 1) == [.failConnect(1), .connect(on: "L1", for: 2)])
        #expect(pool.total == 1)
        #expect(pool.connectFailed(for: 2) == [.failConnect(2)])
        #expect(pool.isQuiescent)
    }

    @Test func abandonedConnectGoesIdle() {
        var pool = Pool(limits: .init())
        _ = pool.leaseRequested(by: 1, on: "L1")
        #expect(pool.connectionEstablished("c1", on: "L1", for: 1, waiterStillWants: false) == .armIdleTimer("c1", token: 1))
        #expect(pool.idleCount == 1 && pool.leased == 0)
    }

    @Test func idleTimerClosesOnlyCurrentIdleAboveMinSize() {
        var pool = Pool(limits: .init(minSize: 1))
        _ = pool.leaseRequested(by: 1, on: "L1")
        _ = pool.leaseRequested(by: 2, on: "L1")
        _ = pool.connectionEstablished("c1", on: "L1", for: 1, waiterStillWants: true)
        _ = pool.connectionEstablished("c2", on: "L1", for: 2, waiterStillWants: true)
        #expect(pool.connectionReleased("c1", on: "L1", reusable: true) == .armIdleTimer("c1", token: 1))
        #expect(pool.connectionReleased("c2", on: "L1", reusable: true) == .armIdleTimer("c2", token: 2))
        // A stale token (the connection was used since) does nothing.
        _ = pool.leaseRequested(by: 3, on: "L1")  // takes c2 (most recent)
        #expect(pool.idleTimerFired("c2", token: 2) == .none)
        #expect(pool.idleTimerFired("c1", token: 1) == .close("c1"))
        // At minSize, idle connections stay.
        _ = pool.connectionReleased("c2", on: "L1", reusable: true)
        #expect(pool.total == 1)
        #expect(pool.idleTimerFired("c2", token: 3) == .none)
    }

    @Test func cancelledWaiterLeavesTheQueue() {
        var pool = Pool(limits: .init(maxSize: 1, maxWaiters: 5))
        _ = pool.leaseRequested(by: 1, on: "L1")
        _ = pool.connectionEstablished("c1", on: "L1", for: 1, waiterStillWants: true)
        _ = pool.leaseRequested(by: 2, on: "L1")
        _ = pool.leaseRequested(by: 3, on: "L1")
        pool.waiterCancelled(2)
        #expect(pool.connectionReleased("c1", on: "L1", reusable: true) == .lease("c1", to: 3))
    }

    @Test func idleConnectionClosedByPeerIsForgotten() {
        var pool = Pool(limits: .init(maxSize: 1, maxWaiters: 0))
        _ = pool.leaseRequested(by: 1, on: "L1")
        _ = pool.connectionEstablished("c1", on: "L1", for: 1, waiterStillWants: true)
        _ = pool.connectionReleased("c1", on: "L1", reusable: true)
        pool.idleConnectionClosed("c1")
        #expect(pool.total == 0)
        #expect(pool.leaseRequested(by: 2, on: "L1") == .connect(on: "L1", for: 2))
    }

    @Test func shutdownClosesIdleAndRejectsWaiters() {
        var pool = Pool(limits: .init(maxSize: 2, maxWaiters: 5))
        _ = pool.leaseRequested(by: 1, on: "L1")
        _ = pool.leaseRequested(by: 2, on: "L1")
        _ = pool.connectionEstablished("c1", on: "L1", for: 1, waiterStillWants: true)
        _ = pool.connectionEstablished("c2", on: "L1", for: 2, waiterStillWants: true)
        _ = pool.connectionReleased("c1", on: "L1", reusable: true)
        _ = pool.leaseRequested(by: 3, on: "L2")  // replaces c1 → connecting on L2
        _ = pool.leaseRequested(by: 4, on: "L2")  // queued
        #expect(pool.shutdown() == [.reject(4)])
        #expect(pool.waiterCount == 0)
    }
}
