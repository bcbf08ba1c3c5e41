import MeshCore
import MeshTestSupport
import Testing

/// Inputs that once crashed or stalled meshd, and the bounds that now hold against them.
@Suite struct HardeningTests {
    /// `/d0=>/d1|/d1;/d1=>/d2|/d2;…`: every step doubles the paths to look up.
    static func doublingDtab(_ steps: Int, last: String = "~") -> String {
        (0..<steps).map { "/d\($0)=>/d\($0 + 1)|/d\($0 + 1)" }.joined(separator: ";") + ";/d\(steps)=>\(last)"
    }

    @Test func chainedAlternationsStopAtTheWorkBudget() throws {
        let dtab = Self.doublingDtab(60)
        #expect(dtab.utf8.count < 1200, "about 1 KB, as a request header")
        let delegator = try StubNamers().delegator(dtab)
        let error = #expect(throws: DelegationError.self) { _ = try delegator.bind(Path(segments: ["d0"])) }
        guard case .workBudgetExceeded(_, let maxLookups)? = error else {
            Issue.record("expected the work budget to run out, got \(String(describing: error))")
            return
        }
        #expect(maxLookups == 1000)
    }

    @Test func chainedAlternationsAreExplainedWithinTheBudget() throws {
        let delegator = try StubNamers().delegator(Self.doublingDtab(60))
        let tree = delegator.delegate(Path(segments: ["d0"]))
        var exceptions = 0
        var nodes = 0
        func walk(_ node: DelegateTree<StubBound>) {
            nodes += 1
            switch node {
            case .delegate(_, _, let next): walk(next)
            case .alt(_, _, let branches): branches.forEach(walk)
            case .union(_, _, let branches): branches.forEach { walk($0.tree) }
            case .exception(_, _, let message):
                exceptions += 1
                #expect(message.contains("more than 1000 lookups"))
            default: break
            }
        }
        walk(tree)
        #expect(exceptions > 0)
        #expect(nodes < 10_000, "explaining costs about the budget, not 2^60")
    }

    @Test func aSmallBudgetStillBindsWhatFitsIt() throws {
        let delegator = Delegator<StubBound>(dtab: try Dtab.read(Self.doublingDtab(3, last: "/$/inet/127.0.0.1/80")), maxLookups: 8) { path throws(DelegationError) in
            try StubNamers().lookup(path)
        }
        #expect(try delegator.bind(Path(segments: ["d0"])) == .leaf(StubBound(id: "/$/inet/127.0.0.1/80")))
        let tight = Delegator<StubBound>(dtab: try Dtab.read(Self.doublingDtab(6)), maxLookups: 8) { path throws(DelegationError) in
            try StubNamers().lookup(path)
        }
        #expect(throws: DelegationError.self) { _ = try tight.bind(Path(segments: ["d0"])) }
    }

    @Test func parenthesesNestOnlySoDeep() throws {
        let fine = String(repeating: "(", count: 32) + "/a" + String(repeating: ")", count: 32)
        #expect(try NameTree<Path>.read(fine) == .leaf(Path(segments: ["a"])))
        for depth in [33, 10_000, 200_000] {
            let deep = String(repeating: "(", count: depth) + "/a" + String(repeating: ")", count: depth)
            #expect(throws: NameSyntaxError.self) { _ = try NameTree<Path>.read(deep) }
            #expect(throws: NameSyntaxError.self) { _ = try Dtab.read("/x=>" + deep) }
        }
    }

    @Test(arguments: [
        "-9223372036854775808 -9223372036854775808",
        "9223372036854775807 -9223372036854775807",
        "0 -9223372036854775808",
        "-1 9223372036854775807",
    ])
    func extremeDeadlinesNeverOverflow(_ value: String) throws {
        let deadline = try #require(try Deadline.read([value]).get())
        for now: Int64 in [.min, -1, 0, 1_700_000_000_000_000_000, .max] {
            let remaining = deadline.remaining(now: now)
            let overdue = deadline.overdue(now: now)
            #expect((remaining == 0) == (overdue != nil) || remaining == 0)
            _ = Deadline.passOn(deadline, within: .max, now: now)
            _ = Deadline.passOn(deadline, within: 0, now: now)
            _ = deadline.headerValue(now: now)
        }
        #expect(deadline.overdue(now: .max) == UInt64(Int64.max.saturatingSubtracting(deadline.deadline)))
    }

    @Test func deadlineArithmeticSaturates() {
        #expect(Int64.max.saturatingAdding(1) == .max)
        #expect(Int64.min.saturatingAdding(UInt64.max) == .max)
        #expect(Int64.min.saturatingAdding(0) == .min)
        #expect(Int64(-5).saturatingAdding(3) == -2)
        #expect(Int64(-5).saturatingAdding(5) == 0)
        #expect(Int64(-5).saturatingAdding(UInt64(Int64.max) + 10) == .max)
        #expect(Int64.min.saturatingSubtracting(1) == .min)
        #expect(Int64.max.saturatingSubtracting(-1) == .max)
        #expect(Int64(0).saturatingSubtracting(.min) == .max)
        #expect(UInt64.max.saturatingAdding(1) == .max)
        let deadline = Deadline(timestamp: 0, deadline: .min)
        #expect(deadline.overdue(now: .max) == UInt64.max / 2 &+ 0 || deadline.overdue(now: .max) == UInt64(Int64.max))
        #expect(Deadline(timestamp: 0, deadline: 100).remaining(now: 40) == 60)
        #expect(Deadline(timestamp: 0, deadline: 100).overdue(now: 140) == 40)
        #expect(Deadline.passOn(nil, within: 10, now: 5) == Deadline(timestamp: 5, deadline: 15))
        #expect(Deadline.passOn(Deadline(timestamp: 1, deadline: 9), within: 10, now: 5) == Deadline(timestamp: 1, deadline: 9))
        #expect(Deadline.passOn(Deadline(timestamp: 1, deadline: 90), within: 10, now: 5) == Deadline(timestamp: 1, deadline: 15))
    }

    @Test func windowedSuccessRateKeepsFixedMemoryAndForgets() {
        var window = OutcomeWindow(length: 20_000)
        // A million outcomes in one window: counted, not stored.
        for index in 0..<1_000_000 { window.record(success: index % 4 != 0, now: 5_000) }
        #expect(window.counts(now: 5_000) == (750_000, 1_000_000))
        // A window later they are gone; newer ones count.
        window.record(success: false, now: 30_000)
        #expect(window.counts(now: 30_000) == (0, 1))
        #expect(window.counts(now: 60_000) == (0, 0))
        // Partly in, partly out: buckets older than the window fall away one at a time.
        var sliding = OutcomeWindow(length: 20)
        for time in 0..<40 { sliding.record(success: true, now: UInt64(time)) }
        #expect(sliding.counts(now: 39).total == 20)
    }

    /// Printed dtabs travel to the next hop (`l5d-ctx-dtab`); weights too large or too small for
    /// plain `description` once printed in exponent notation, which no dtab reader accepts.
    @Test(arguments: [7.777777777777777e45, 1e-7, 0.000123, 2.5e15, 1e300, 5e-324, 0.25, 3, 1e15 + 0.5])
    func weightsPrintSoThatTheyReadBack(_ weight: Double) throws {
        let tree = NameTree<Path>.union([.init(weight: weight, tree: .leaf(Path(segments: ["a"]))), .init(weight: 1, tree: .leaf(Path(segments: ["b"])))])
        let printed = tree.description
        #expect(!printed.contains("e"), "\(printed)")
        #expect(try NameTree<Path>.read(printed) == tree, "\(printed)")
    }
}
