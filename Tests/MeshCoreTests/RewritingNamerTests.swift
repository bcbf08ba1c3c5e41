import MeshCore
import MeshTestSupport
import Testing

@Suite struct RewritingNamerTests {
    @Test(arguments: [
        ("io.buoyant.hostportPfx", "/ia/127.1:8080/etc", "/ia/127.1/8080/etc"),
        ("io.buoyant.hostportPfx", "/ia/google.com:8180/etc", "/ia/google.com/8180/etc"),
        ("io.buoyant.hostportPfx", "/ia/web:http", "/ia/web/http"),
        ("io.buoyant.hostportPfx", "/ia/google.com:8180:abcdef/etc", "~"),
        ("io.buoyant.hostportPfx", "/ia/web", "~"),
        ("io.buoyant.hostportPfx", "/ia/web:HTTP", "~"),
        ("io.buoyant.porthostPfx", "/ia/127.1:8080/etc", "/ia/8080/127.1/etc"),
        ("io.buoyant.http.domainToPathPfx", "/pfx/foo.buoyant.io", "/pfx/io/buoyant/foo"),
        ("io.buoyant.http.domainToPathPfx", "/pfx/foo.buoyant.io/resource/name", "/pfx/io/buoyant/foo/resource/name"),
        ("io.buoyant.http.domainToPathPfx", "/pfx/a..b", "~"),
        ("io.buoyant.http.subdomainOfPfx", "/a.b/foo/bar.a.b/bah", "/foo/bar/bah"),
        ("io.buoyant.http.subdomainOfPfx", "/a.b/foo/bar_suffix.a.b", "/foo/bar_suffix"),
        ("io.buoyant.http.subdomainOfPfx", "/a.b/foo/bar.a.b:9090/bah", "/foo/bar/bah"),
        ("io.buoyant.http.subdomainOfPfx", "/a.b/foo/a.b", "~"),
        ("io.buoyant.http.subdomainOfPfx", "/a.b/foo/bar.c.d", "~"),
    ])
    func rewrites(_ name: String, _ path: String, _ expected: String) throws {
        let result = RewritingNamers.lookup(name, try Path.read(path))
        #expect(result?.description == expected)
    }

    @Test func unknownNamesAreNotRewritingNamers() {
        #expect(RewritingNamers.lookup("io.buoyant.nope", Path("a")) == nil)
    }
}

@Suite struct DelegateTreeTests {
    let humbug = """
        /beh => /#/error ;
        /bah/humbug => /$/inet/127.1/8080 ;
        /foo => /bah | /beh | /$/fail ;
        /foo => /bar ;
        /boo => /foo ;
        /meh => /heh ;
        /neg => ~ ;
        """

    /// A namer set where `/#/error` always fails, as in Linkerd's delegator test.
    func delegator(_ dtab: String) throws -> Delegator<StubBound> {
        let stub = StubNamers()
        return Delegator(dtab: try Dtab.read(dtab)) { path throws(DelegationError) in
            if path.starts(with: Path("#", "error")) { throw .namerFailed(path: path, reason: "error naming \(path)") }
            return try stub.lookup(path)
        }
    }

    @Test func explainsEveryBranchOfLinkerdsExample() throws {
        let tree = try delegator(humbug).delegate(try Path.read("/boo/humbug"))
        guard case .delegate(let root, nil, let next) = tree else { Issue.record("expected a delegate root, got \(tree)"); return }
        #expect(root.description == "/boo/humbug")
        guard case .alt(let altPath, let altDentry?, let branches) = next else { Issue.record("expected an alt, got \(next)"); return }
        #expect(altPath.description == "/foo/humbug")
        #expect(altDentry.description == "/boo=>/foo")
        #expect(branches.count == 4)
        guard case .neg(let negPath, let negDentry?, false) = branches[0] else { Issue.record("expected neg first"); return }
        #expect(negPath.description == "/bar/humbug" && negDentry.description == "/foo=>/bar")
        guard case .delegate(let bahPath, _, .leaf(let leafPath, let leafDentry?, let bound)) = branches[1] else {
            Issue.record("expected a delegate to a leaf, got \(branches[1])"); return
        }
        #expect(bahPath.description == "/bah/humbug")
        #expect(leafPath.description == "/$/inet/127.1/8080")
        #expect(leafDentry.description == "/bah/humbug=>/$/inet/127.1/8080")
        #expect(bound.id == "/$/inet/127.1/8080")
        guard case .delegate(_, _, .exception(let errorPath, _, let message)) = branches[2] else {
            Issue.record("expected an exception, got \(branches[2])"); return
        }
        #expect(errorPath.description == "/#/error/humbug")
        #expect(message.contains("error naming /#/error/humbug"))
        guard case .fail(let failPath, _) = branches[3] else { Issue.record("expected fail last, got \(branches[3])"); return }
        #expect(failPath.description == "/$/fail/humbug")
    }

    @Test func explainsNegatives() throws {
        let meh = try delegator(humbug).delegate(try Path.read("/meh"))
        guard case .delegate(_, nil, .neg(let path, let dentry?, false)) = meh else { Issue.record("got \(meh)"); return }
        #expect(path.description == "/heh" && dentry.description == "/meh=>/heh")
        let neg = try delegator(humbug).delegate(try Path.read("/neg"))
        guard case .delegate(_, nil, .neg(_, let negDentry?, true)) = neg else { Issue.record("got \(neg)"); return }
        #expect(negDentry.description == "/neg=>~")
    }

    @Test func loopsBecomeExceptionsNotCrashes() throws {
        let tree = try delegator("/a => /b; /b => /a").delegate(Path("a"))
        var found = false
        func walk(_ node: DelegateTree<StubBound>) {
            switch node {
            case .exception(_, _, let message): found = found || message.contains("exceeded")
            case .delegate(_, _, let next): walk(next)
            case .alt(_, _, let branches): branches.forEach(walk)
            case .union(_, _, let branches): branches.forEach { walk($0.tree) }
            default: break
            }
        }
        walk(tree)
        #expect(found)
    }

    @Test func unionsKeepWeights() throws {
        let tree = try delegator("/s => 0.7 * /$/inet/h/1 & 0.3 * /$/inet/h/2").delegate(Path("s"))
        // The root step re-states the union's path, so (as in Linkerd) it collapses into it; the
        // leaves keep the dentry.
        guard case .union(let path, nil, let branches) = tree else { Issue.record("got \(tree)"); return }
        #expect(path == Path("s"))
        #expect(branches.map(\.weight) == [0.7, 0.3])
        guard case .leaf(_, let dentry?, _) = branches[0].tree else { Issue.record("got \(branches[0].tree)"); return }
        #expect(dentry.prefix == Dentry.Prefix(Path("s")))
    }
}
