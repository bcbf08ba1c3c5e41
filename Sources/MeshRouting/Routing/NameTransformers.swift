// Transformers rewrite what binding produced (Linkerd's `interpreter.transformers`): filters and
// port rewrites derive a new endpoint set from each bound name's live one, under a new name
// (`/%/io.l5d.port/4141/#/io.l5d.fs/web`) so that it gets a client of its own; `replace` and
// `const` swap the bound names for another concrete name.

import MeshConfig
import MeshCore
import MeshDiscovery
import NIOConcurrencyHelpers

final class NameTransformers: Sendable {
    let configs: [TransformerConfig]
    private let localAddresses: Set<String>
    private let specificHosts: [String: String]

    /// Derived endpoint sets, one per transformed name while something (a binding, a client)
    /// uses it; each keeps its observation of the original alive, and the original holds it
    /// only weakly, so it goes when its users do.
    private let derived = WeakValueCache<Path, Watchable<Addr>>()

    init(_ configs: [TransformerConfig]) {
        self.configs = configs
        self.localAddresses = configs.contains(.localhost) ? LocalAddresses.current() : []
        var hosts: [String: String] = [:]
        for case .specificHost(let host) in configs {
            hosts[host] = HostResolver.resolve(host) ?? host
        }
        self.specificHosts = hosts
    }

    var isEmpty: Bool { configs.isEmpty }

    /// Applies every transformer in order. `bindConcrete` binds a `/$/…` or `/#/…` name.
    func apply(_ tree: NameTree<BoundName>, bindConcrete: (Path) throws(DelegationError) -> NameTree<BoundName>) throws(DelegationError) -> NameTree<BoundName> {
        var result = tree
        for config in configs {
            switch config {
            case .replace(let path):
                // Only bound names are replaced; names that did not bind (~, !, $) stay as they are.
                let replacement = try bindConcrete(path)
                result = result.flatMap { _ in replacement }
            case .const(let path):
                result = try bindConcrete(path)
            case .localhost:
                result = result.map { derive($0, tag: ["io.l5d.localhost"]) { [localAddresses] endpoint in localAddresses.contains(endpoint.host) ? endpoint : nil } }
            case .specificHost(let host):
                let ip = specificHosts[host] ?? host
                result = result.map { derive($0, tag: ["io.l5d.specificHost", host]) { endpoint in endpoint.host == ip ? endpoint : nil } }
            case .port(let port):
                result = result.map { derive($0, tag: ["io.l5d.port", String(port)]) { endpoint in
                    Endpoint(host: endpoint.host, port: port, weight: endpoint.weight)
                } }
            }
        }
        return result
    }

    /// The bound name `/%/<tag>/<original id>`, whose endpoints follow the original's through `map`.
    private func derive(_ bound: BoundName, tag: [String], map: @escaping @Sendable (Endpoint) -> Endpoint?) -> BoundName {
        let id = Path(segments: ["%"] + tag) + bound.id
        let addr = derived.value(for: id) {
            let transform: @Sendable (Addr) -> Addr = { addr in
                guard case .bound(let endpoints) = addr else { return addr }
                var seen = Set<Endpoint.Address>()
                return .bound(endpoints.compactMap(map).filter { seen.insert($0.address).inserted })
            }
            let watchable = Watchable<Addr>(transform(bound.addr.value))
            let observation = bound.addr.observe { [weak watchable] addr in watchable?.set(transform(addr)) }
            watchable.keepAlive(observation)
            // The original too: nothing else may hold it (a `/$/inet` set is held weakly, and
            // its lookup only while someone holds it), and it must live to feed this one.
            watchable.keepAlive(bound.addr)
            return watchable
        }
        return BoundName(id: id, residual: bound.residual, addr: addr)
    }
}
