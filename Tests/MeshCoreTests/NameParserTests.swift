import MeshCore
import Testing

@Suite struct PathTests {
    @Test(arguments: [
        ("/", [String]()),
        ("  /foo/bar  ", ["foo", "bar"]),
        ("/\\x66\\x6f\\x6F", ["foo"]),
        ("/#/io.l5d.fs/web", ["#", "io.l5d.fs", "web"]),
        ("/s#/foo", ["s#", "foo"]),
        ("/$/inet/127.1/8080", ["$", "inet", "127.1", "8080"]),
    ])
    func reads(_ text: String, _ segments: [String]) throws {
        #expect(try Path.read(text).segments == segments)
    }

    @Test(arguments: ["", "/foo/bar/", "//foo", "/{}", "/\\?", "/\\x?", "/\\x0?", "/foo^bar", "/a/*", "invalid-param", "/ foo"])
    func rejects(_ text: String) {
        #expect(throws: NameSyntaxError.self) { try Path.read(text) }
    }

    @Test func showsAndReadsBack() throws {
        let path = Path("a b", "ok", "ünï")
        #expect(path.description == "/a\\x20b/ok/\\xc3\\xbcn\\xc3\\xaf")
        #expect(try Path.read(path.description) == path)
    }

    @Test func errorPointsAtTheCharacter() {
        do {
            _ = try Path.read("/foo^bar")
            Issue.record("expected an error")
        } catch {
            #expect(error.offset == 4)
            #expect(error.lineAndColumn == (1, 5))
            #expect(error.pointer == "/foo^bar\n    ^")
        }
    }
}

@Suite struct DtabParserTests {
    @Test(arguments: [
        ("", 0),
        ("  /=>!  ", 1),
        ("/=>!;", 1),
        ("/ => !", 1),
        ("/=>!;/foo=>/bar", 2),
        ("\n /b => /c;\n /a => /b;\n ", 2),
        ("# a comment\n/a => /b # another\n;/c => /d", 2),
        ("/svc => /#/io.l5d.fs", 1),
    ])
    func reads(_ text: String, _ count: Int) throws {
        #expect(try Dtab.read(text).dentries.count == count)
    }

    @Test(arguments: ["/a = > /b", ";/a=>/b", "/a=>/b;;/c=>/d", "/foo/*bar/baz => !", "/&!", "/a =>", "/a => /b /c", "// x"])
    func rejects(_ text: String) {
        #expect(throws: NameSyntaxError.self) { try Dtab.read(text) }
    }

    @Test func wildcardPrefix() throws {
        let dtab = try Dtab.read("/foo/*/bar => !")
        #expect(dtab.dentries[0].prefix.elements == [.label("foo"), .any, .label("bar")])
        #expect(dtab.description == "/foo/*/bar=>!")
    }

    @Test func treePrecedenceAndWeights() throws {
        let tree = try NameTree<Path>.read("1 * /foo & 2 * /bar | .5 * /bar & .5 * /baz")
        #expect(tree == .alt([
            .union([.init(weight: 1, tree: .leaf(Path("foo"))), .init(weight: 2, tree: .leaf(Path("bar")))]),
            .union([.init(weight: 0.5, tree: .leaf(Path("bar"))), .init(weight: 0.5, tree: .leaf(Path("baz")))]),
        ]))
        #expect(try NameTree<Path>.read("! | ~ | $") == .alt([.fail, .neg, .empty]))
        // A weight on a lone term is dropped.
        #expect(try NameTree<Path>.read("2 * /a | /b") == .alt([.leaf(Path("a")), .leaf(Path("b"))]))
        #expect(try NameTree<Path>.read("(/a | /b) | /c") == .alt([.alt([.leaf(Path("a")), .leaf(Path("b"))]), .leaf(Path("c"))]))
    }

    @Test(arguments: ["", "#", "/foo &", "/foo & 0.1.2 * /bar", "/foo & . * /bar", "1e3 * /a", "(", "/a |"])
    func rejectsTrees(_ text: String) {
        #expect(throws: NameSyntaxError.self) { try NameTree<Path>.read(text) }
    }

    @Test func errorsPointIntoMultilineDtabs() {
        do {
            _ = try Dtab.read("/a => /b;\n/c => /d &;\n")
            Issue.record("expected an error")
        } catch {
            #expect(error.lineAndColumn.line == 2)
            #expect(error.lineAndColumn.column == 11)
        }
    }

    @Test func showRoundTrips() throws {
        let text = "/svc=>/#/io.l5d.fs | /$/inet/127.1/8080;/a/*=>0.7*/b & 0.3*/c"
        let dtab = try Dtab.read(text)
        #expect(try Dtab.read(dtab.description) == dtab)
    }
}
