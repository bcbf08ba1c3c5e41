// `meshd delegate`: how a router would route a name, step by step, in the terminal.

import ArgumentParser
import Foundation
import Logging
import MeshAdmin
import MeshConfig
import MeshCore
import MeshDiscovery
import MeshProxy
import MeshTelemetry
import NIOPosix

struct DelegateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "delegate",
        abstract: "Show how a router delegates a name: every dtab step, dentry and binding."
    )

    @OptionGroup var options: CommonOptions

    @Option(name: .long, help: "The router's label (default: the first router).")
    var router: String?

    @Option(name: .long, help: "Extra dentries, appended to the router's dtab as an l5d-dtab header would be.")
    var dtab: String?

    @Flag(name: .long, help: "Print Linkerd's delegator JSON instead of a tree.")
    var json = false

    @Argument(help: "The logical name, e.g. /svc/web.")
    var path: String

    func run() async throws {
        let configPath = options.configPath
        let config: MeshdConfig
        do {
            config = try ConfigLoader.load(path: configPath)
        } catch {
            FileHandle.standardError.write(Data((error.description + "\n").utf8))
            throw ExitCode(1)
        }
        let name: Path
        let extra: Dtab
        do {
            name = try Path.read(path)
            extra = try dtab.map { try Dtab.read($0) } ?? .empty
        } catch {
            throw ValidationError("\(error)")
        }
        var logger = Logger(label: "meshd")
        logger.logLevel = .critical
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let linker = Linker(config: config, group: group, metrics: MeshMetrics(), logger: logger)
        linker.readDiscoveryOnce()
        guard let selected = router.map({ label in linker.routers.first { $0.label == label } }) ?? linker.routers.first else {
            try? await group.shutdownGracefully()
            throw ValidationError("no router labelled '\(router ?? "")'; routers: \(linker.routers.map(\.label).joined(separator: ", "))")
        }
        let tree = selected.delegator(local: extra).delegate(name)
        if json {
            print(AdminRoutes.delegatorJSON(tree).serialized(pretty: true))
        } else {
            print(DelegateTreeText.render(tree), terminator: "")
        }
        let reason = selected.unroutableReason(name, local: extra)
        try? await group.shutdownGracefully()
        if let reason {
            // The tree is printed either way; the status tells scripts whether the name routes.
            FileHandle.standardError.write(Data("meshd delegate: \(reason)\n".utf8))
            throw ExitCode(2)
        }
    }
}

/// The delegation tree as indented text.
enum DelegateTreeText {
    static func render(_ tree: DelegateTree<BoundName>) -> String {
        var out = ""
        write(tree, prefix: "", isLast: true, isRoot: true, into: &out)
        return out
    }

    private static func write(_ tree: DelegateTree<BoundName>, prefix: String, isLast: Bool, isRoot: Bool, into out: inout String) {
        let branch = isRoot ? "" : (isLast ? "└─ " : "├─ ")
        let childPrefix = isRoot ? "" : prefix + (isLast ? "   " : "│  ")
        let dentry = tree.dentry.map { "   (dentry \($0.prefix) => \($0.destination))" } ?? ""
        var children: [DelegateTree<BoundName>] = []
        var line: String
        switch tree {
        case .delegate(let path, _, let next):
            line = path.description
            children = [next]
        case .alt(let path, _, let branches):
            line = "\(path)  — alternatives, first that binds"
            children = branches
        case .union(let path, _, let branches):
            line = "\(path)  — union by weight \(branches.map { String($0.weight) }.joined(separator: " : "))"
            children = branches.map(\.tree)
        case .leaf(let path, _, let bound):
            line = "\(path)  → bound \(bound.id)\(bound.residual.isEmpty ? "" : " residual \(bound.residual)"): \(addrText(bound.addr.value))"
        case .neg(let path, _, let explicit):
            line = explicit ? "~ (negative)" : "\(path)  ✗ nothing binds this"
        case .fail(let path, _):
            line = "\(path)  ✗ fails (!)"
        case .empty(let path, _):
            line = "\(path)  ✗ empty set ($)"
        case .exception(let path, _, let message):
            line = "\(path)  ✗ \(message)"
        }
        out += prefix + branch + line + dentry + "\n"
        for (index, child) in children.enumerated() {
            write(child, prefix: childPrefix, isLast: index == children.count - 1, isRoot: false, into: &out)
        }
    }

    private static func addrText(_ addr: Addr) -> String {
        switch addr {
        case .pending: return "discovery pending"
        case .neg: return "no longer exists"
        case .failed(let reason): return "discovery failed: \(reason)"
        case .bound(let endpoints):
            if endpoints.isEmpty { return "no endpoints" }
            return endpoints.map { $0.weight == 1 ? $0.description : "\($0) *\($0.weight)" }.joined(separator: ", ")
        }
    }
}
