// The load-balancing algorithms a client can use (Linkerd's `client.loadBalancer.kind`).

public enum BalancerKind: Sendable, Hashable {
    /// Least loaded of two random picks (Finagle's P2CLeastLoaded). Linkerd's default.
    case p2c(maxEffort: Int)
    /// Two random picks compared by peak-EWMA latency × load: steers away from slow endpoints.
    case ewma(maxEffort: Int, decayNanos: UInt64)
    /// p2c within a window of endpoints sized to the load: few connections at low load, more
    /// as load grows.
    case aperture(maxEffort: Int, smoothWindowNanos: UInt64, lowLoad: Double, highLoad: Double, minAperture: Int)
    /// The least loaded endpoint, always.
    case heap
    /// Each endpoint in turn, in proportion to its weight (smooth weighted round robin).
    case roundRobin(maxEffort: Int)

    public var name: String {
        switch self {
        case .p2c: return "p2c"
        case .ewma: return "ewma"
        case .aperture: return "aperture"
        case .heap: return "heap"
        case .roundRobin: return "roundRobin"
        }
    }

    var maxEffort: Int {
        switch self {
        case .p2c(let effort), .ewma(let effort, _), .aperture(let effort, _, _, _, _), .roundRobin(let effort): return max(1, effort)
        case .heap: return 1
        }
    }
}

/// e^-x for x ≥ 0, without libm: halve until small, Taylor series, square back.
@usableFromInline
func decay(_ x: Double) -> Double {
    guard x > 0 else { return 1 }
    guard x < 700 else { return 0 }
    var y = x
    var halvings = 0
    while y > 0.5 {
        y /= 2
        halvings += 1
    }
    var term = 1.0
    var sum = 1.0
    for index in 1...12 {
        term *= -y / Double(index)
        sum += term
    }
    for _ in 0..<halvings { sum *= sum }
    return sum
}
