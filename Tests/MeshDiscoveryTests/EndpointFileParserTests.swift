import MeshDiscovery
import Testing

@Suite struct EndpointFileParserTests {
    @Test func readsEntriesWeightsAndComments() {
        let (entries, problems) = EndpointFileParser.parse("""
            # the web tier
            192.0.2.220 8080
            192.0.2.105 8080   # rack 2

            192.0.2.210 8080 * 2.0
            web-3.example 9000 *0.5
            ::1 8081
            """)
        #expect(problems.isEmpty)
        #expect(entries.map(\.host) == ["192.0.2.220", "192.0.2.105", "192.0.2.210", "web-3.example", "::1"])
        #expect(entries.map(\.weight) == [1, 1, 2, 0.5, 1])
        #expect(entries.map(\.line) == [2, 3, 5, 6, 7])
    }

    @Test func badLinesAreReportedAndSkipped() {
        let (entries, problems) = EndpointFileParser.parse("""
            127.0.0.1 8080
            not-a-port-line
            127.0.0.1 99999
            127.0.0.1 http
            127.0.0.1 8081 * heavy
            127.0.0.1 8082 x 2
            bad/host 80
            127.0.0.1 8083
            """)
        #expect(entries.map(\.port) == [8080, 8083])
        #expect(problems.map(\.line) == [2, 3, 4, 5, 6, 7])
        #expect(problems[1].reason.contains("1 to 65535"))
    }

    @Test func emptyFileIsAnEmptySet() {
        let (entries, problems) = EndpointFileParser.parse("\n# nothing here\n")
        #expect(entries.isEmpty && problems.isEmpty)
    }
}

@Suite struct HostResolverTests {
    @Test func literalsNeedNoLookup() {
        #expect(HostResolver.resolve("10.1.2.3") == "10.1.2.3")
        #expect(HostResolver.resolve("[::1]") == "::1")
    }

    @Test func linkerdShorthandAndLocalhostResolve() {
        #expect(HostResolver.resolve("127.1") == "127.0.0.1")
        #expect(HostResolver.resolve("localhost") == "127.0.0.1")
    }

    @Test func unknownNamesDoNotResolve() {
        #expect(HostResolver.resolve("no-such-host.invalid") == nil)
    }
}
