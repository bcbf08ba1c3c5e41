import MeshCore
import Testing

@Suite struct AccessRulesTests {
    static let web = PeerIdentity(uris: ["spiffe://mesh/ns/web/sa/frontend"], dnsNames: ["web.mesh"], commonName: "web", subject: "CN=web", certificateHash: "00")

    @Test func patternsMatchExactlyOrByASuffixWildcard() {
        #expect(IdentityPattern("spiffe://mesh/ns/web/sa/frontend").matches("spiffe://mesh/ns/web/sa/frontend"))
        #expect(!IdentityPattern("spiffe://mesh/ns/web/sa/frontend").matches("spiffe://mesh/ns/web/sa/frontend2"))
        #expect(IdentityPattern("spiffe://mesh/ns/web/*").matches("spiffe://mesh/ns/web/sa/frontend"))
        #expect(!IdentityPattern("spiffe://mesh/ns/web/*").matches("spiffe://mesh/ns/webby/sa/x"))
        #expect(IdentityPattern("*").matches("anything"))
    }

    @Test func aRuleNeedsAnIdentityAndAName() {
        let rules = AccessRules([
            AccessRule(identities: [IdentityPattern("spiffe://mesh/ns/web/*")], paths: [Path("svc", "users")]),
            AccessRule(identities: [IdentityPattern("ops")], paths: []),
        ])
        #expect(rules.allows(Self.web, name: Path("svc", "users")))
        #expect(rules.allows(Self.web, name: Path("svc", "users", "v2")))
        #expect(!rules.allows(Self.web, name: Path("svc", "usersx")))
        #expect(!rules.allows(Self.web, name: Path("svc", "orders")))
        #expect(!rules.allows(nil, name: Path("svc", "users")))
        // The subject CN counts as an identity too; a rule without paths allows every name.
        let ops = PeerIdentity(uris: [], dnsNames: [], commonName: "ops", subject: "CN=ops", certificateHash: "00")
        #expect(rules.allows(ops, name: Path("svc", "anything")))
        #expect(ops.primary == "ops" && Self.web.primary == "spiffe://mesh/ns/web/sa/frontend")
    }
}

@Suite struct CertificateNamesTests {
    @Test func exactAndWildcardNames() {
        #expect(CertificateNames.matches(pattern: "web.mesh", host: "WEB.mesh"))
        #expect(!CertificateNames.matches(pattern: "web.mesh", host: "api.mesh"))
        #expect(CertificateNames.matches(pattern: "*.mesh.local", host: "web.mesh.local"))
        #expect(!CertificateNames.matches(pattern: "*.mesh.local", host: "a.web.mesh.local"))
        #expect(!CertificateNames.matches(pattern: "*.mesh.local", host: "mesh.local"))
        #expect(!CertificateNames.matches(pattern: "*.local", host: "x.local"))
        #expect(!CertificateNames.matches(pattern: "*", host: "anything"))
    }

    @Test func theCommonNameCountsOnlyWithoutDNSNames() {
        #expect(CertificateNames.cover("web.mesh", dnsNames: [], commonName: "web.mesh"))
        #expect(!CertificateNames.cover("web.mesh", dnsNames: ["api.mesh"], commonName: "web.mesh"))
        #expect(!CertificateNames.cover("web.mesh", dnsNames: [], commonName: nil))
    }
}
