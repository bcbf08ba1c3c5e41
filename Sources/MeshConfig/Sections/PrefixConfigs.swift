import MeshCore

/// Parameters that a config entry can partly set: an entry's keys override, its absent keys
/// leave what earlier entries set.
public protocol OverridableParams: Sendable, Hashable, JSONRepresentable {
    associatedtype Overrides: Sendable, Hashable, JSONRepresentable
    init()
    mutating func apply(_ overrides: Overrides)
    /// `apply`, for an entry whose prefix captured `captures` (`{service}` → `web`).
    mutating func apply(_ overrides: Overrides, captures: [String: String])
}

extension OverridableParams {
    public mutating func apply(_ overrides: Overrides, captures: [String: String]) { apply(overrides) }
}

/// Parameters whose overrides the config loader can read from a mapping.
protocol ConfigReadableParams: OverridableParams {
    static func readOverrides(_ m: ConfigMapping) -> Overrides
}

/// The `kind: io.l5d.global | io.l5d.static` shape that Linkerd's `client` and `service` blocks
/// share: global applies one set of parameters everywhere; static lists
/// `configs: [{prefix, …}]`, and every entry whose prefix matches a name applies, in order.
public struct PrefixConfigs<Params: OverridableParams>: Sendable, Hashable, JSONRepresentable {
    public enum Kind: String, Sendable, Hashable {
        case global = "io.l5d.global"
        case `static` = "io.l5d.static"
    }

    public struct Entry: Sendable, Hashable {
        public var prefix: PrefixPattern
        public var overrides: Params.Overrides
    }

    public var kind = Kind.global
    /// The parameters of `io.l5d.global`, and the base that `io.l5d.static` entries modify.
    public var base = Params()
    /// `io.l5d.static`'s entries, in order.
    public var configs: [Entry] = []

    public init() {}

    /// The parameters for `name`.
    public func params(for name: Path) -> Params {
        var params = base
        for entry in configs where entry.prefix.matches(name) { params.apply(entry.overrides, captures: entry.prefix.captures(in: name)) }
        return params
    }

    public var json: JSONValue {
        switch kind {
        case .global:
            guard case .object(let pairs) = base.json else { return base.json }
            return .object([("kind", .string(kind.rawValue))] + pairs)
        case .static:
            let entries = configs.map { entry -> JSONValue in
                guard case .object(let pairs) = entry.overrides.json else { return entry.overrides.json }
                return .object([("prefix", .string(entry.prefix.description))] + pairs)
            }
            return .object([("kind", .string(kind.rawValue)), ("defaults", base.json), ("configs", .array(entries))])
        }
    }
}

extension PrefixConfigs where Params: ConfigReadableParams {
    /// - Parameters:
    ///   - what: `client` or `service`, for messages.
    ///   - example: an entry to show when `configs` is missing.
    static func read(_ node: ConfigNode?, what: String, example: String, prefixHint: String) -> PrefixConfigs {
        var config = PrefixConfigs()
        guard let node, let m = node.mapping else { return config }
        defer { m.finish() }
        guard let kindName = m.kind(supported: [Kind.global.rawValue, Kind.static.rawValue], what: what, defaultKind: Kind.global.rawValue),
            let kind = Kind(rawValue: kindName)
        else {
            m.accepted(m.keys)
            return config
        }
        config.kind = kind
        switch kind {
        case .global:
            config.base.apply(Params.readOverrides(m))
        case .static:
            guard let list = m.required("configs", hint: "list entries like \(example)")?.sequence else { return config }
            for item in list {
                guard let entry = item.mapping else { continue }
                defer { entry.finish() }
                guard let prefixNode = entry.required("prefix", hint: prefixHint), let prefix = PrefixPattern.read(prefixNode) else {
                    entry.accepted(entry.keys)
                    continue
                }
                config.configs.append(Entry(prefix: prefix, overrides: Params.readOverrides(entry)))
            }
        }
        return config
    }
}
