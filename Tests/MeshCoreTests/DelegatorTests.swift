import MeshCore
import MeshTestSupport
import Testing

/// Dtab cases from Linkerd's dtab documentation and Finagle's tests (see docs/dtabs.md), with
/// the bound results Finagle gives.
@Suite struct DelegatorTests {
    enum Expected: CustomStringConvertible {
        case bound(String)
        case tree(String)
        case neg, fail, empty
        case maxDepth

        var description: String {
            switch self {
            case .bound(let text): return "bound \(text)"
            case .tree(let text): return "tree \(text)"
            case .neg: return "~"
            case .fail: return "!"
            case .empty: return "$"
            case .maxDepth: return "max depth"
            }
        }
    }

    static let ice = "/smitten => /USA/CA/SF/Octavia/432;/iceCreamStore => /smitten;/iceCreamStore => /humphrys;"
    static let humbug = """
        /beh => /#/error ;
        /bah/humbug => /$/inet/127.1/8080 ;
        /foo => /bah | /beh | /$/fail ;
        /foo => /bar ;
        /boo => /foo ;
        /meh => /heh ;
        /neg => ~ ;
        """

    static let cases: [(String, String, Expected)] = [
        ("/iceCreamStore => /smitten;", "/iceCreamStore/try/allFlavors", .neg),
        ("/iceCreamStore => /smitten;", "/shoeStore/windowShop/sandals", .neg),
        (ice, "/iceCreamStore/try/allFlavors", .neg),
        (ice + "/USA/CA/SF => /#/test/sf;", "/iceCreamStore/try/allFlavors", .bound("/#/test/sf/Octavia/432/try/allFlavors")),
        // Later dentries first: humphrys binds, so smitten is never tried.
        (ice + "/humphrys => /#/test/humphrys;/USA => /#/test/usa;", "/iceCreamStore/x", .bound("/#/test/humphrys/x")),
        ("/iceCreamStore => /smitten; /smitten/try => /smittenLocation/waitInLine/thenTry; /smittenLocation => /sanfrancisco/octavia/432; /california => /USA/CA; /sanfrancisco => /california/SF; /USA => /$/inet/127.0.0.1/1",
         "/iceCreamStore/try/allFlavors", .bound("/$/inet/127.0.0.1/1/CA/SF/octavia/432/waitInLine/thenTry/allFlavors")),
        ("/iceCream => /youScream; /youScream => /weAllScream/for; /weAllScream/for => /iceCream;", "/iceCream", .maxDepth),
        ("/http/1.1/GET/*/icecream => /#/test/smitten;", "/http/1.1/GET/chocolate/icecream", .bound("/#/test/smitten")),
        ("/http/1.1/GET/*/icecream => /#/test/smitten;", "/http/1.1/GET/vanilla/icecream/cone", .bound("/#/test/smitten/cone")),
        ("/http/1.1/GET/*/icecream => /#/test/smitten;", "/http/1.1/POST/chocolate/icecream", .neg),
        ("/iceCreamStore => ~ | /#/test/smitten;", "/iceCreamStore/x", .bound("/#/test/smitten/x")),
        ("/iceCreamStore => /smitten | !;", "/iceCreamStore", .fail),
        ("/env => /#/test/discovery; /svc => /env/prod", "/svc/users", .bound("/#/test/discovery/prod/users")),
        (humbug, "/boo/humbug", .bound("/$/inet/127.1/8080")),
        (humbug, "/meh", .neg),
        (humbug, "/neg", .neg),
        ("", "/$/inet/127.0.0.1/1234", .bound("/$/inet/127.0.0.1/1234")),
        ("", "/$/fail/foo/bar", .fail),
        ("", "/$/nil/foo/bar", .empty),
        ("", "/foo/bar/bah/blah", .neg),
        ("/foo/bar => /bar/foo; /bar/foo => /foo/bar", "/foo/bar", .maxDepth),
        ("/foo => /bar;/foo=>/biz;/biz=>/$/inet/0/8080;/bar=>/$/inet/0/9090", "/foo", .bound("/$/inet/0/8080")),
        ("/s => ! | /$/inet/h/1 | /$/inet/h/2", "/s", .fail),
        ("/s => ~ | /$/fail | /$/inet/h/1", "/s", .fail),
        ("/s => /$/nil | /$/fail | /$/inet/h/1", "/s", .empty),
        ("/svc/* => /$/inet/127.1/4000 ;", "/svc/dog", .bound("/$/inet/127.1/4000")),
        ("/svc => 0.7 * /$/inet/h/1 & 0.3 * /$/inet/h/2", "/svc/x", .tree("0.7*/$/inet/h/1/x & 0.3*/$/inet/h/2/x")),
        ("/s => /$/nil | /$/inet/127.0.0.1/80", "/s", .empty),
        ("/s => /$/inet/127.0.0.1/1 & !", "/s", .bound("/$/inet/127.0.0.1/1")),
        ("/s => (! & !) | /$/inet/127.0.0.1/1", "/s", .bound("/$/inet/127.0.0.1/1")),
        ("/=>!", "/anything/at/all", .fail),
        // A per-request override is appended, so it wins; the base entry is the fallback.
        ("/svc => /$/inet/127.0.0.1/1; /svc => /$/inet/127.0.0.1/2", "/svc", .bound("/$/inet/127.0.0.1/2")),
        ("/svc => /$/inet/127.0.0.1/1; /svc => /#/test/missing", "/svc", .bound("/$/inet/127.0.0.1/1")),
        // A dentry can override a system path.
        ("/$/inet => /#/test/shadow", "/$/inet/h/1", .bound("/#/test/shadow/h/1")),
        // Two matching `~` dentries: neg without asking the namers.
        ("/#/test => ~; /#/test => ~", "/#/test/present", .neg),
        // One matching `~` dentry behaves like none: the namers answer.
        ("/#/test => ~", "/#/test/present", .bound("/#/test/present")),
        ("/svc => /#/test", "/svc/present/extra/path", .bound("/#/test/present/extra/path")),
    ]

    @Test(arguments: cases)
    func binds(_ dtab: String, _ path: String, _ expected: Expected) throws {
        let delegator = try StubNamers(existing: ["sf", "humphrys", "smitten", "discovery", "shadow", "present"]).delegator(dtab)
        do {
            let bound = try delegator.bind(try Path.read(path))
            switch expected {
            case .bound(let text): #expect(bound.description == text)
            case .tree(let text): #expect(bound.description == text)
            case .neg: #expect(bound == .neg)
            case .fail: #expect(bound == .fail)
            case .empty: #expect(bound == .empty)
            case .maxDepth: Issue.record("expected max depth, got \(bound)")
            }
        } catch {
            guard case .maxDepth = expected, case .maxDepthExceeded? = error as? DelegationError else {
                Issue.record("unexpected \(error)")
                return
            }
        }
    }

    @Test func depthLimitCountsLookups() throws {
        // Finagle's NamerTest: /s => /s/srv with a limit of 2 fails on /s/foo/bar.
        let delegator = try StubNamers().delegator("/s => /s/srv", maxDepth: 2)
        #expect(throws: DelegationError.self) { try delegator.bind(try Path.read("/s/foo/bar")) }
        // Binding /$/inet/h/1 is itself a lookup: /a, /b and it make three.
        let three = try StubNamers().delegator("/a => /b; /b => /$/inet/h/1", maxDepth: 3)
        #expect(try three.bind(try Path.read("/a")).description == "/$/inet/h/1")
        let two = try StubNamers().delegator("/a => /b; /b => /$/inet/h/1", maxDepth: 2)
        #expect(throws: DelegationError.self) { try two.bind(try Path.read("/a")) }
    }

    @Test func unknownSystemNamerIsAnError() throws {
        let delegator = try StubNamers().delegator("")
        #expect(throws: DelegationError.self) { try delegator.bind(try Path.read("/$/inet")) }
    }

    @Test func lookupReturnsLaterDentriesFirst() throws {
        let dtab = try Dtab.read("/a => /x; /a/b => /y")
        #expect(dtab.lookup(try Path.read("/a/b/c")).description == "/y/c | /x/b/c")
        let reversed = try Dtab.read("/a/b => /y; /a => /x")
        #expect(reversed.lookup(try Path.read("/a/b/c")).description == "/x/b/c | /y/c")
    }
}

@Suite struct NameTreeSimplifyTests {
    @Test(arguments: [
        ("~", "~"),
        ("/ok & ~ & /blah & $", "/ok & /blah & $"),
        ("~ & ~ & (~ | ~)", "~"),
        ("~ | /foo | /bar", "/foo | /bar"),
        ("! | /ok", "!"),
        ("~ | /ok | !", "/ok | !"),
        ("/a & 0 * /b", "/a"),
    ])
    func simplifies(_ text: String, _ expected: String) throws {
        #expect(try NameTree<Path>.read(text).simplified.description == expected)
    }
}
