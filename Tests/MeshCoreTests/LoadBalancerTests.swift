import MeshCore
import Testing

/// Balancers as scripts: picks, finishes with latencies and outcomes, at times we choose.
@Suite struct LoadBalancerTests {
    static let ms: UInt64 = 1_000_000

    func endpoints(_ count: Int, weight: Double = 1) -> [Endpoint] {
        (0..<count).map { Endpoint(host: "10.0.0.\($0)", port: 80, weight: weight) }
    }

    func balancer(_ kind: BalancerKind, _ endpoints: [Endpoint], policy: FailureAccrualPolicy = .none, failFast: Bool = false) -> (LoadBalancer, SplitMix64) {
        var random = SplitMix64(seed: 42)
        var balancer = LoadBalancer(kind: kind, policy: policy, backoff: Backoff(.constant(nanoseconds: 10_000 * Self.ms)), failFast: failFast)
        balancer.update(endpoints: endpoints, using: &random)
        return (balancer, random)
    }

    static let allKinds: [BalancerKind] = [
        .p2c(maxEffort: 5), .ewma(maxEffort: 5, decayNanos: 10_000 * ms),
        .aperture(maxEffort: 5, smoothWindowNanos: 5_000 * ms, lowLoad: 0.5, highLoad: 2, minAperture: 1), .heap, .roundRobin(maxEffort: 5),
    ]

    @Test(arguments: allKinds)
    func emptyPicksNothing(_ kind: BalancerKind) {
        var (balancer, random) = balancer(kind, [])
        #expect(balancer.pick(now: 0, using: &random) == .none)
    }

    @Test(arguments: allKinds)
    func followsWeightsWhenRequestsComeOneAtATime(_ kind: BalancerKind) {
        var (balancer, random) = balancer(kind, [Endpoint(host: "a", port: 1, weight: 3), Endpoint(host: "b", port: 1, weight: 1)])
        var toA = 0
        var now: UInt64 = 0
        for _ in 0..<4000 {
            guard case .endpoint(let picked) = balancer.pick(now: now, using: &random) else { Issue.record("no pick"); return }
            if picked.host == "a" { toA += 1 }
            now += Self.ms
            balancer.finished(picked.address, success: true, latency: Self.ms, now: now, using: &random)
        }
        let share = Double(toA) / 4000
        // Weight classes: the class is chosen by weight, whatever the algorithm.
        #expect(share > 0.70 && share < 0.80, "\(kind): \(share)")
    }

    @Test(arguments: [BalancerKind.p2c(maxEffort: 5), .heap])
    func spreadsOutstandingLoadEvenly(_ kind: BalancerKind) {
        var (balancer, random) = balancer(kind, endpoints(4))
        for _ in 0..<400 { _ = balancer.pick(now: 0, using: &random) }
        let loads = balancer.nodes.map(\.load)
        #expect(loads.reduce(0, +) == 400)
        #expect(loads.max()! - loads.min()! <= 3)
    }

    @Test func heapAlwaysTakesTheLeastLoaded() {
        var (balancer, random) = balancer(.heap, endpoints(3))
        _ = balancer.pick(now: 0, using: &random)
        _ = balancer.pick(now: 0, using: &random)
        guard case .endpoint(let third) = balancer.pick(now: 0, using: &random) else { Issue.record("no pick"); return }
        #expect(balancer.nodes.allSatisfy { $0.load == 1 })
        #expect(balancer.node(for: third.address)?.load == 1)
    }

    @Test func roundRobinTakesTurns() {
        var (balancer, random) = balancer(.roundRobin(maxEffort: 5), endpoints(3))
        var sequence: [String] = []
        for _ in 0..<6 {
            guard case .endpoint(let picked) = balancer.pick(now: 0, using: &random) else { return }
            sequence.append(picked.host)
        }
        #expect(Array(sequence[0..<3]) == Array(sequence[3..<6]))
        #expect(Set(sequence).count == 3)
    }

    @Test func ewmaStaysAwayFromTheSlowEndpoint() {
        var (balancer, random) = balancer(.ewma(maxEffort: 5, decayNanos: 10_000 * Self.ms), endpoints(3))
        let slow = balancer.nodes[0].endpoint.address
        var now: UInt64 = 0
        var toSlow = 0
        // Concurrency of ~5: each pick finishes five picks later.
        var outstanding: [Endpoint.Address] = []
        for _ in 0..<3000 {
            guard case .endpoint(let picked) = balancer.pick(now: now, using: &random) else { return }
            if picked.address == slow { toSlow += 1 }
            outstanding.append(picked.address)
            now += Self.ms
            if outstanding.count > 5 {
                let done = outstanding.removeFirst()
                balancer.finished(done, success: true, latency: done == slow ? 100 * Self.ms : 10 * Self.ms, now: now, using: &random)
            }
        }
        #expect(Double(toSlow) / 3000 < 0.1, "slow endpoint got \(toSlow)")
        let estimate = balancer.latencyEstimate(slow, now: now)!
        #expect(estimate > 50 * Double(Self.ms))
    }

    @Test func p2cShiftsLoadAwayFromASlowEndpoint() {
        var (balancer, random) = balancer(.p2c(maxEffort: 5), endpoints(2))
        let slow = balancer.nodes[0].endpoint.address
        var now: UInt64 = 0
        var finishing: [(at: UInt64, address: Endpoint.Address)] = []
        var toSlow = 0
        for _ in 0..<2000 {
            now += Self.ms
            while let first = finishing.first, first.at <= now {
                balancer.finished(first.address, success: true, latency: 0, now: now, using: &random)
                finishing.removeFirst()
            }
            guard case .endpoint(let picked) = balancer.pick(now: now, using: &random) else { return }
            if picked.address == slow { toSlow += 1 }
            finishing.append((now + (picked.address == slow ? 50 : 5) * Self.ms, picked.address))
            finishing.sort { $0.at < $1.at }
        }
        #expect(Double(toSlow) / 2000 < 0.25, "slow endpoint got \(toSlow)")
    }

    @Test func apertureGrowsWithLoadAndShrinksWhenIdle() {
        var (balancer, random) = balancer(.aperture(maxEffort: 5, smoothWindowNanos: 100 * Self.ms, lowLoad: 0.5, highLoad: 2, minAperture: 1), endpoints(10))
        #expect(balancer.apertureSize == 1)
        var now: UInt64 = 0
        var picked: Set<Endpoint.Address> = []
        for _ in 0..<200 {
            now += Self.ms
            if case .endpoint(let endpoint) = balancer.pick(now: now, using: &random) { picked.insert(endpoint.address) }
        }
        #expect(balancer.apertureSize > 5, "200 outstanding requests widen the aperture")
        for node in balancer.nodes {
            for _ in 0..<node.load {
                now += Self.ms
                balancer.finished(node.endpoint.address, success: true, latency: 0, now: now, using: &random)
            }
        }
        for _ in 0..<200 {
            now += 50 * Self.ms
            if case .endpoint(let endpoint) = balancer.pick(now: now, using: &random) {
                balancer.finished(endpoint.address, success: true, latency: 0, now: now, using: &random)
            }
        }
        #expect(balancer.apertureSize <= 2, "idle load narrows it again")
        // A light load uses few endpoints: fewer connections for the same traffic.
        var (light, lightRandom) = self.balancer(.aperture(maxEffort: 5, smoothWindowNanos: 100 * Self.ms, lowLoad: 0.5, highLoad: 2, minAperture: 1), endpoints(10))
        var used: Set<Endpoint.Address> = []
        for step in 0..<500 {
            let at = UInt64(step) * 10 * Self.ms
            if case .endpoint(let endpoint) = light.pick(now: at, using: &lightRandom) {
                used.insert(endpoint.address)
                light.finished(endpoint.address, success: true, latency: 0, now: at, using: &lightRandom)
            }
        }
        #expect(used.count <= 2)
    }

    @Test(arguments: allKinds)
    func skipsEjectedEndpointsAndKeepsStateAcrossUpdates(_ kind: BalancerKind) {
        var (balancer, random) = balancer(kind, endpoints(3), policy: .consecutiveFailures(2))
        let bad = balancer.nodes[1].endpoint
        _ = balancer.finished(bad.address, success: false, latency: 0, now: 0, using: &random)
        #expect(balancer.finished(bad.address, success: false, latency: 0, now: 0, using: &random) == .ejected(forNanoseconds: 10_000 * Self.ms))
        for step in 0..<300 {
            guard case .endpoint(let picked) = balancer.pick(now: UInt64(step), using: &random) else { Issue.record("no pick"); return }
            #expect(picked != bad, "\(kind) picked an ejected endpoint")
            balancer.finished(picked.address, success: true, latency: 0, now: UInt64(step), using: &random)
        }
        balancer.update(endpoints: endpoints(3) + [Endpoint(host: "10.0.0.9", port: 80)], using: &random)
        #expect(balancer.counts(now: 500).available == 3, "the ejection survives a discovery update")
    }

    @Test func anAbandonedProbeLetsTheNextRequestProbe() {
        var (balancer, random) = balancer(.p2c(maxEffort: 5), endpoints(2), policy: .consecutiveFailures(1))
        let dead = balancer.nodes[0].endpoint
        balancer.finished(dead.address, success: false, latency: 0, now: 0, using: &random)
        let due = 10_000 * Self.ms
        var probed = false
        for _ in 0..<100 where !probed {
            guard case .endpoint(let picked) = balancer.pick(now: due, using: &random) else { return }
            if picked == dead { probed = true } else { balancer.finished(picked.address, success: true, latency: 0, now: due, using: &random) }
        }
        #expect(balancer.node(for: dead.address)?.accrual.status == .probing)
        // The probe's client went away: no verdict, and the endpoint may be probed again.
        balancer.finished(dead.address, success: nil, wasProbe: true, latency: 0, now: due, using: &random)
        #expect(balancer.node(for: dead.address)?.accrual.isAvailable(now: due) == true)
    }

    @Test func allEjectedStillPicksUnlessFailFast() {
        var (balancer, random) = balancer(.p2c(maxEffort: 5), endpoints(2), policy: .consecutiveFailures(1))
        for node in balancer.nodes { balancer.finished(node.endpoint.address, success: false, latency: 0, now: 0, using: &random) }
        #expect(balancer.counts(now: 1).available == 0)
        if case .endpoint = balancer.pick(now: 1, using: &random) {} else { Issue.record("least bad expected") }
        var (fast, fastRandom) = self.balancer(.p2c(maxEffort: 5), endpoints(2), policy: .consecutiveFailures(1), failFast: true)
        for node in fast.nodes { fast.finished(node.endpoint.address, success: false, latency: 0, now: 0, using: &fastRandom) }
        #expect(fast.pick(now: 1, using: &fastRandom) == .allEjected)
    }

    @Test func probeAfterBackoffRevivesOrExtends() {
        var (balancer, random) = balancer(.p2c(maxEffort: 5), endpoints(1) + [Endpoint(host: "b", port: 1)], policy: .consecutiveFailures(1))
        let dead = balancer.nodes[0].endpoint
        balancer.finished(dead.address, success: false, latency: 0, now: 0, using: &random)
        let afterBackoff = 10_000 * Self.ms
        // Before the backoff passes, no pick lands on it.
        for _ in 0..<50 {
            guard case .endpoint(let picked) = balancer.pick(now: afterBackoff - 1, using: &random) else { return }
            #expect(picked != dead)
            balancer.finished(picked.address, success: true, latency: 0, now: afterBackoff - 1, using: &random)
        }
        // After it, exactly one probe goes; others wait for its outcome.
        var probes = 0
        for _ in 0..<50 {
            guard case .endpoint(let picked) = balancer.pick(now: afterBackoff, using: &random) else { return }
            if picked == dead {
                probes += 1
                #expect(balancer.lastPickWasProbe)
            }
        }
        #expect(probes == 1)
        // A request from before the ejection finishing now does not decide the probe.
        #expect(balancer.finished(dead.address, success: true, wasProbe: false, latency: 0, now: afterBackoff, using: &random) == nil)
        #expect(balancer.finished(dead.address, success: false, wasProbe: true, latency: 0, now: afterBackoff, using: &random) == .ejected(forNanoseconds: 10_000 * Self.ms))
        // After the next backoff, the probe succeeds and the endpoint is back.
        var revived = false
        for _ in 0..<100 where !revived {
            guard case .endpoint(let picked) = balancer.pick(now: 2 * afterBackoff, using: &random) else { return }
            if picked == dead { revived = balancer.finished(dead.address, success: true, wasProbe: true, latency: 0, now: 2 * afterBackoff, using: &random) == .revived }
        }
        #expect(revived)
        #expect(balancer.node(for: dead.address)?.accrual.status == .alive)
    }
}

@Suite struct FailureAccrualTests {
    static let second: UInt64 = 1_000_000_000

    @Test func consecutiveFailuresEjectAfterNAndSuccessResets() {
        var random = SplitMix64(seed: 1)
        var accrual = EndpointAccrual(policy: .consecutiveFailures(3), backoff: Backoff(.constant(nanoseconds: 5 * Self.second)))
        #expect(accrual.outcome(success: false, now: 0, using: &random) == nil)
        #expect(accrual.outcome(success: false, now: 0, using: &random) == nil)
        #expect(accrual.outcome(success: true, now: 0, using: &random) == nil)
        #expect(accrual.outcome(success: false, now: 0, using: &random) == nil)
        #expect(accrual.outcome(success: false, now: 0, using: &random) == nil)
        #expect(accrual.outcome(success: false, now: 1, using: &random) == .ejected(forNanoseconds: 5 * Self.second))
        #expect(!accrual.isAvailable(now: 2))
        #expect(accrual.isAvailable(now: 5 * Self.second + 1))
        accrual.picked(now: 5 * Self.second + 1)
        #expect(accrual.status == .probing)
        #expect(!accrual.isAvailable(now: 5 * Self.second + 2), "one probe at a time")
        #expect(accrual.outcome(success: true, now: 6 * Self.second, using: &random) == .revived)
        #expect(accrual.status == .alive)
    }

    @Test func successRateEjectsAnEndpointFailingThirtyPercent() {
        var random = SplitMix64(seed: 2)
        var healthy = EndpointAccrual(policy: .successRate(rate: 0.9, requests: 20), backoff: .linkerdFailureAccrualDefault)
        var flaky = EndpointAccrual(policy: .successRate(rate: 0.9, requests: 20), backoff: .linkerdFailureAccrualDefault)
        var ejectedAt: Int?
        for index in 0..<200 {
            #expect(healthy.outcome(success: true, now: UInt64(index), using: &random) == nil)
            let fails = index % 10 < 3
            if flaky.outcome(success: !fails, now: UInt64(index), using: &random) != nil, ejectedAt == nil { ejectedAt = index }
        }
        #expect(ejectedAt != nil && ejectedAt! >= 19, "ejected only after the window fills: \(String(describing: ejectedAt))")
        #expect(healthy.status == .alive)
    }

    @Test func windowedSuccessRateForgetsOldFailures() {
        var random = SplitMix64(seed: 3)
        var accrual = EndpointAccrual(policy: .successRateWindowed(rate: 0.9, window: 10 * Self.second, minimumRequests: 5), backoff: .linkerdFailureAccrualDefault)
        // Failures long ago, then plenty of successes: the old failures left the window.
        for index in 0..<4 { _ = accrual.outcome(success: false, now: UInt64(index), using: &random) }
        for index in 0..<20 {
            #expect(accrual.outcome(success: true, now: 30 * Self.second + UInt64(index), using: &random) == nil)
        }
        // Within one window, 3 failures in 10 eject.
        var ejected = false
        for index in 0..<10 {
            if accrual.outcome(success: index % 3 != 0, now: 31 * Self.second + UInt64(index), using: &random) != nil { ejected = true }
        }
        #expect(ejected)
    }

    @Test func noneNeverEjects() {
        var random = SplitMix64(seed: 4)
        var accrual = EndpointAccrual(policy: .none, backoff: .linkerdFailureAccrualDefault)
        for index in 0..<100 { #expect(accrual.outcome(success: false, now: UInt64(index), using: &random) == nil) }
    }

    @Test func equalJitteredBackoffGrowsWithinBounds() {
        var random = SplitMix64(seed: 5)
        var backoff = Backoff.linkerdFailureAccrualDefault
        let waits = (0..<12).map { _ in backoff.next(using: &random) }
        #expect(waits[0] == 5_000_000_000, "the first wait is the minimum, as Finagle's")
        #expect(waits.allSatisfy { $0 <= 300 * Self.second })
        #expect(waits[6] >= 150 * Self.second, "capped growth reaches the maximum's half or more")
        backoff.reset()
        #expect(backoff.next(using: &random) <= 5 * Self.second)
    }

    @Test func decorrelatedJitterStaysBetweenMinAndMax() {
        var random = SplitMix64(seed: 6)
        var backoff = Backoff(.decorrelatedJittered(min: 100, max: 10_000))
        for _ in 0..<200 {
            let wait = backoff.next(using: &random)
            #expect(wait >= 100 && wait <= 10_000)
        }
    }
}

/// When every endpoint is ejected, traffic goes where it is likeliest to succeed, and probes.
@Suite struct AllEjectedTests {
    static let second: UInt64 = 1_000_000_000

    @Test func picksTheEndpointWhoseEjectionEndsSoonestAndProbesIt() {
        var random = SplitMix64(seed: 11)
        let a = Endpoint(host: "10.0.0.1", port: 80)
        let b = Endpoint(host: "10.0.0.2", port: 80)
        var balancer = LoadBalancer(kind: .p2c(maxEffort: 5), policy: .consecutiveFailures(1), backoff: Backoff(.constant(nanoseconds: 30 * Self.second)), failFast: false)
        balancer.update(endpoints: [a, b], using: &random)
        // a fails at 0 (ejected until 30 s), b at 10 s (until 40 s).
        func fail(_ endpoint: Endpoint, at now: UInt64) {
            while true {
                guard case .endpoint(let picked) = balancer.pick(now: now, using: &random) else { return }
                let probe = balancer.lastPickWasProbe
                balancer.finished(picked.address, success: picked != endpoint, wasProbe: probe, latency: 1, now: now, using: &random)
                if picked == endpoint { return }
            }
        }
        fail(a, at: 0)
        fail(b, at: 10 * Self.second)
        #expect(balancer.counts(now: 11 * Self.second).available == 0)
        // At 12 s both are out; a comes back soonest: the pick goes there, as its probe.
        guard case .endpoint(let first) = balancer.pick(now: 12 * Self.second, using: &random) else {
            Issue.record("expected a pick")
            return
        }
        #expect(first == a)
        #expect(balancer.lastPickWasProbe)
        // While a's probe is out, the next pick probes b rather than piling onto a.
        guard case .endpoint(let second) = balancer.pick(now: 12 * Self.second, using: &random) else { return }
        #expect(second == b)
        #expect(balancer.lastPickWasProbe)
        // a's probe succeeds: a is back at once, long before its backoff would have ended.
        #expect(balancer.finished(a.address, success: true, wasProbe: true, latency: 1, now: 13 * Self.second, using: &random) == .revived)
        #expect(balancer.counts(now: 13 * Self.second).available == 1)
        for _ in 0..<20 {
            guard case .endpoint(let next) = balancer.pick(now: 13 * Self.second, using: &random) else { return }
            #expect(next == a)
            balancer.finished(next.address, success: true, wasProbe: balancer.lastPickWasProbe, latency: 1, now: 13 * Self.second, using: &random)
        }
    }

    @Test func aFailedEarlyProbeEjectsAgainForTheNextBackoff() {
        var random = SplitMix64(seed: 12)
        let a = Endpoint(host: "10.0.0.1", port: 80)
        var balancer = LoadBalancer(kind: .p2c(maxEffort: 5), policy: .consecutiveFailures(1), backoff: Backoff(.constant(nanoseconds: 30 * Self.second)), failFast: false)
        balancer.update(endpoints: [a], using: &random)
        _ = balancer.pick(now: 0, using: &random)
        balancer.finished(a.address, success: false, wasProbe: false, latency: 1, now: 0, using: &random)
        _ = balancer.pick(now: Self.second, using: &random)
        #expect(balancer.lastPickWasProbe)
        #expect(balancer.finished(a.address, success: false, wasProbe: true, latency: 1, now: Self.second, using: &random) == .ejected(forNanoseconds: 30 * Self.second))
    }

    /// A requeue after a refused connection: the endpoint that just failed is not picked again
    /// while another is left, even one failure accrual has ejected (it goes as a probe).
    @Test func aRetryAvoidsTheEndpointsItTried() {
        var random = SplitMix64(seed: 13)
        let a = Endpoint(host: "10.0.0.1", port: 80)
        let b = Endpoint(host: "10.0.0.2", port: 80)
        var balancer = LoadBalancer(kind: .p2c(maxEffort: 5), policy: .consecutiveFailures(1), backoff: Backoff(.constant(nanoseconds: 30 * Self.second)), failFast: false)
        balancer.update(endpoints: [a, b], using: &random)
        for _ in 0..<50 {
            #expect(balancer.pick(now: 0, avoiding: [a.address], using: &random) == .endpoint(b))
            balancer.finished(b.address, success: nil, latency: 1, now: 0, using: &random)
        }
        // b is ejected; a retry that tried a still goes to b, as b's probe.
        _ = balancer.pick(now: 0, avoiding: [a.address], using: &random)
        balancer.finished(b.address, success: false, wasProbe: false, latency: 1, now: 0, using: &random)
        #expect(balancer.counts(now: 1).available == 1)
        #expect(balancer.pick(now: 1, avoiding: [a.address], using: &random) == .endpoint(b))
        #expect(balancer.lastPickWasProbe)
        // Everything tried: back to the usual pick.
        if case .endpoint = balancer.pick(now: 1, avoiding: [a.address, b.address], using: &random) {} else { Issue.record("expected a pick") }
    }
}
