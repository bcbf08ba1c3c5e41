// The format of an `io.l5d.fs` service file: one endpoint per line, `HOST PORT`, optionally
// followed by `* WEIGHT`; `#` starts a comment; blank lines are ignored. A bad line is reported
// and skipped, and the rest of the file still counts.

import MeshCore

/// An endpoint as written in a service file, before its host is resolved.
public struct EndpointEntry: Hashable, Sendable {
    public var host: String
    public var port: Int
    public var weight: Double
    public var line: Int
}

/// A line of a service file that could not be read.
public struct EndpointFileProblem: Hashable, Sendable, CustomStringConvertible {
    public var line: Int
    public var text: String
    public var reason: String

    public var description: String { "line \(line): \(reason): \(text)" }
}

public enum EndpointFileParser {
    public static func parse(_ contents: String) -> (entries: [EndpointEntry], problems: [EndpointFileProblem]) {
        var entries: [EndpointEntry] = []
        var problems: [EndpointFileProblem] = []
        var lineNumber = 0
        for rawLine in contents.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            var line = Substring(rawLine)
            if let hash = line.firstIndex(of: "#") { line = line[..<hash] }
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" })
            if fields.isEmpty { continue }
            switch parseFields(fields) {
            case .success(let entry):
                entries.append(EndpointEntry(host: entry.host, port: entry.port, weight: entry.weight, line: lineNumber))
            case .failure(let reason):
                let text = rawLine.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" }).joined(separator: " ")
                problems.append(EndpointFileProblem(line: lineNumber, text: text, reason: reason.message))
            }
        }
        return (entries, problems)
    }

    struct Reason: Error { var message: String }

    private static func parseFields(_ fields: [Substring]) -> Result<(host: String, port: Int, weight: Double), Reason> {
        guard fields.count == 2 || fields.count == 4 || (fields.count == 3 && fields[2].hasPrefix("*")) else {
            return .failure(Reason(message: "expected 'HOST PORT' or 'HOST PORT * WEIGHT'"))
        }
        let host = String(fields[0])
        guard HostSyntax.isValid(host) else { return .failure(Reason(message: "invalid host")) }
        guard let port = Int(fields[1]), (1...65535).contains(port) else {
            return .failure(Reason(message: "port must be a number from 1 to 65535"))
        }
        var weight = 1.0
        if fields.count > 2 {
            // Accept both `* 0.5` and `*0.5`.
            let weightText: Substring
            if fields.count == 4 {
                guard fields[2] == "*" else { return .failure(Reason(message: "expected '*' before the weight")) }
                weightText = fields[3]
            } else {
                weightText = fields[2].dropFirst()
            }
            guard let parsed = Double(weightText), parsed.isFinite, parsed >= 0 else {
                return .failure(Reason(message: "weight must be a non-negative number"))
            }
            weight = parsed
        }
        return .success((host, port, weight))
    }
}

/// What may stand as a host: a DNS name, an IPv4 address, or an IPv6 address (bare or bracketed).
enum HostSyntax {
    static func isValid(_ host: String) -> Bool {
        guard !host.isEmpty, host.utf8.count <= 253 else { return false }
        if host.hasPrefix("[") && host.hasSuffix("]") { return isIPv6Like(host.dropFirst().dropLast()) }
        if host.contains(":") { return isIPv6Like(Substring(host)) }
        return host.utf8.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                || byte == UInt8(ascii: "-") || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "_")
        }
    }

    private static func isIPv6Like(_ text: Substring) -> Bool {
        !text.isEmpty && text.utf8.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x46) || (byte >= 0x61 && byte <= 0x66)
                || byte == UInt8(ascii: ":") || byte == UInt8(ascii: ".")
        }
    }
}
