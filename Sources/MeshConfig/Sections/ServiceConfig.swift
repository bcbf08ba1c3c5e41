import MeshCore

/// `routers[].service`: policy per logical name (timeouts, retries, response classes).
/// Only the defaults exist today; every Linkerd key here is reported as not yet supported.
public struct ServiceConfig: Sendable, Hashable, JSONRepresentable {
    public init() {}

    static func read(_ node: ConfigNode?) -> ServiceConfig {
        guard let node, let m = node.mapping else { return ServiceConfig() }
        defer { m.finish() }
        guard m.kind(supported: ["io.l5d.global"], linkerdOnly: ["io.l5d.static"], what: "service", defaultKind: "io.l5d.global") != nil else {
            m.accepted(m.keys)
            return ServiceConfig()
        }
        m.unsupported(["totalTimeoutMs", "retries", "responseClassifier"], "service timeouts, retries and response classifiers are not implemented yet")
        return ServiceConfig()
    }

    public var json: JSONValue { .object([("kind", .string("io.l5d.global"))]) }
}
