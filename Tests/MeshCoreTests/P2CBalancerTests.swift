import MeshCore
import Testing

@Suite struct P2CBalancerTests {
    func endpoints(_ count: Int, weight: Double = 1) -> [Endpoint] {
        (0..<count).map { Endpoint(host: "10.0.0.\($0)", port: 80, weight: weight) }
    }

    @Test func emptyPicksNothing() {
        var balancer = P2CBalancer()
        var random = SplitMix64(seed: 1)
        #expect(balancer.pick(using: &random) == nil)
    }

    @Test func prefersTheLessLoaded() {
        var balancer = P2CBalancer()
        let a = Endpoint(host: "10.0.0.1", port: 80)
        let b = Endpoint(host: "10.0.0.2", port: 80)
        balancer.update(endpoints: [a])
        var random = SplitMix64(seed: 7)
        for _ in 0..<10 { _ = balancer.pick(using: &random) }
        // A keeps its ten outstanding requests across the update; B starts idle.
        balancer.update(endpoints: [a, b])
        for _ in 0..<10 {
            let picked = balancer.pick(using: &random)!
            #expect(picked == b)
            balancer.requestFinished(picked.address)
        }
    }

    @Test func spreadsLoadEvenlyUnderConcurrency() {
        var balancer = P2CBalancer()
        balancer.update(endpoints: endpoints(4))
        var random = SplitMix64(seed: 42)
        // 400 requests outstanding at once: least-loaded-of-two keeps every node within a few.
        for _ in 0..<400 { _ = balancer.pick(using: &random) }
        let loads = balancer.nodes.map(\.load)
        #expect(loads.reduce(0, +) == 400)
        #expect(loads.max()! - loads.min()! <= 3)
    }

    @Test func respectsWeights() {
        var balancer = P2CBalancer()
        balancer.update(endpoints: [Endpoint(host: "a", port: 1, weight: 3), Endpoint(host: "b", port: 1, weight: 1)])
        var random = SplitMix64(seed: 3)
        for _ in 0..<4000 { _ = balancer.pick(using: &random) }
        let share = Double(balancer.nodes[0].load) / 4000
        #expect(share > 0.70 && share < 0.80)
    }

    @Test func followsWeightsWhenRequestsComeOneAtATime() {
        var balancer = P2CBalancer()
        balancer.update(endpoints: [Endpoint(host: "a", port: 1, weight: 3), Endpoint(host: "b", port: 1, weight: 1)])
        var random = SplitMix64(seed: 11)
        var toA = 0
        for _ in 0..<4000 {
            let picked = balancer.pick(using: &random)!
            if picked.host == "a" { toA += 1 }
            balancer.requestFinished(picked.address)
        }
        let share = Double(toA) / 4000
        #expect(share > 0.70 && share < 0.80)
    }

    @Test func skipsUnavailableUntilEffortRunsOut() {
        var balancer = P2CBalancer(maxEffort: 5)
        balancer.update(endpoints: endpoints(3))
        var random = SplitMix64(seed: 9)
        balancer.setAvailable(balancer.nodes[0].endpoint.address, false)
        for _ in 0..<300 {
            let picked = balancer.pick(using: &random)!
            #expect(picked.address != balancer.nodes[0].endpoint.address)
            balancer.requestFinished(picked.address)
        }
        // All unavailable: a pick still happens (least bad), rather than none.
        for node in balancer.nodes { balancer.setAvailable(node.endpoint.address, false) }
        #expect(balancer.pick(using: &random) != nil)
    }

    @Test func updateKeepsStateOfEndpointsThatStay() {
        var balancer = P2CBalancer()
        let initial = endpoints(3)
        balancer.update(endpoints: initial)
        var random = SplitMix64(seed: 5)
        for _ in 0..<30 { _ = balancer.pick(using: &random) }
        let before = balancer.node(for: initial[1].address)!.load
        balancer.setAvailable(initial[1].address, false)
        balancer.update(endpoints: [initial[1], Endpoint(host: "10.0.0.9", port: 80)])
        #expect(balancer.nodes.count == 2)
        #expect(balancer.node(for: initial[1].address)!.load == before)
        #expect(balancer.node(for: initial[1].address)!.isAvailable == false)
        // A finished request for a removed endpoint is ignored.
        balancer.requestFinished(initial[0].address)
        #expect(balancer.node(for: initial[0].address) == nil)
    }
}
