// The delegation explanation as Linkerd's `/delegator.json` shapes it (DelegateTree JSON), so
// that tools written for Linkerd's dashboard read meshd's answers too.

import MeshCore
import MeshDiscovery

extension AdminRoutes {
    /// Linkerd's `/delegator.json` form of a delegation tree.
    public static func delegatorJSON(_ tree: DelegateTree<BoundName>) -> JSONValue {
        DelegatorJSON.tree(tree)
    }
}

enum DelegatorJSON {
    static func tree(_ tree: DelegateTree<BoundName>) -> JSONValue {
        var pairs: [(String, JSONValue)]
        switch tree {
        case .delegate(let path, let dentry, let next):
            pairs = [("type", .string("delegate")), ("path", .string(path.description))] + dentryPair(dentry) + [("delegate", self.tree(next))]
        case .alt(let path, let dentry, let branches):
            pairs = [("type", .string("alt")), ("path", .string(path.description))] + dentryPair(dentry) + [("alt", .array(branches.map(self.tree)))]
        case .union(let path, let dentry, let branches):
            let items = branches.map { JSONValue.object([("weight", .double($0.weight)), ("tree", self.tree($0.tree))]) }
            pairs = [("type", .string("union")), ("path", .string(path.description))] + dentryPair(dentry) + [("union", .array(items))]
        case .leaf(let path, let dentry, let bound):
            pairs = [("type", .string("leaf")), ("path", .string(path.description))] + dentryPair(dentry) + [("bound", self.bound(bound))]
        case .neg(let path, let dentry, let explicit):
            pairs = [("type", .string("neg")), ("path", .string(explicit ? "~" : path.description))] + dentryPair(dentry)
        case .fail(let path, let dentry):
            let shown = path.starts(with: Path("$", "fail")) ? path.description : "!"
            pairs = [("type", .string("fail")), ("path", .string(shown))] + dentryPair(dentry)
        case .empty(let path, let dentry):
            pairs = [("type", .string("empty")), ("path", .string(path.description))] + dentryPair(dentry)
        case .exception(let path, let dentry, let message):
            pairs = [("type", .string("exception")), ("path", .string(path.description))] + dentryPair(dentry) + [("message", .string(message))]
        }
        return .object(pairs)
    }

    private static func dentryPair(_ dentry: Dentry?) -> [(String, JSONValue)] {
        guard let dentry else { return [] }
        return [("dentry", .object([("prefix", .string(dentry.prefix.description)), ("dst", .string(dentry.destination.description))]))]
    }

    static func bound(_ bound: BoundName) -> JSONValue {
        .object([("addr", addr(bound.addr.value)), ("id", .string(bound.id.description)), ("path", .string(bound.residual.description))])
    }

    static func addr(_ addr: Addr) -> JSONValue {
        switch addr {
        case .pending: return .object([("type", .string("pending"))])
        case .neg: return .object([("type", .string("neg"))])
        case .failed(let cause): return .object([("type", .string("failed")), ("cause", .string(cause))])
        case .bound(let endpoints):
            let addrs = endpoints.map { endpoint -> JSONValue in
                let meta: JSONValue = endpoint.weight == 1 ? .object([]) : .object([("weight", .double(endpoint.weight))])
                return .object([("ip", .string(endpoint.host)), ("port", .int(endpoint.port)), ("meta", meta)])
            }
            return .object([("type", .string("bound")), ("addrs", .array(addrs)), ("meta", .object([]))])
        }
    }
}

/// Query strings: `a=1&b=two%20words` (with `+` for space).
enum QueryString {
    static func parse(_ query: String) -> [String: String] {
        var result: [String: String] = [:]
        for pair in query.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = decode(parts[0])
            result[key] = parts.count > 1 ? decode(parts[1]) : ""
        }
        return result
    }

    static func decode(_ text: Substring) -> String {
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8).makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "+") {
                bytes.append(UInt8(ascii: " "))
            } else if byte == UInt8(ascii: "%"), let high = iterator.next(), let low = iterator.next(),
                let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16) {
                bytes.append(value)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
