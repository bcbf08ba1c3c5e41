// Log lines to standard error, as text for people or as one JSON object per line for collectors.

import Foundation
import Logging
import MeshCore

/// `--log-format`.
public enum LogFormat: String, Sendable, CaseIterable {
    case text
    case json
}

/// A `LogHandler` writing to standard error.
public struct StderrLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    private let label: String
    private let format: LogFormat

    public init(label: String, format: LogFormat, level: Logger.Level) {
        self.label = label
        self.format = format
        self.logLevel = level
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let extra = event.metadata { merged.merge(extra) { $1 } }
        let timestamp = Self.timestamp()
        var line: String
        switch format {
        case .text:
            line = "\(timestamp) \(event.level.rawValue.uppercased()) \(label): \(event.message)"
            for key in merged.keys.sorted() {
                line += " \(key)=\(Self.textValue(merged[key]!))"
            }
        case .json:
            var pairs: [(String, String)] = [("ts", timestamp), ("level", event.level.rawValue), ("logger", label), ("msg", "\(event.message)")]
            for key in merged.keys.sorted() { pairs.append((key, "\(merged[key]!)")) }
            line = "{" + pairs.map { Self.jsonString($0.0) + ":" + Self.jsonString($0.1) }.joined(separator: ",") + "}"
        }
        line += "\n"
        line.withUTF8 { bytes in
            // One write(2) per line keeps lines whole when several threads log at once.
            _ = write(2, bytes.baseAddress, bytes.count)
        }
    }

    private static func textValue(_ value: Logger.Metadata.Value) -> String {
        let text = "\(value)"
        return text.contains(" ") || text.isEmpty ? "\"\(text)\"" : text
    }

    private static func jsonString(_ value: String) -> String {
        var out = ""
        JSONValue.writeString(value, into: &out)
        return out
    }

    private static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var seconds = now.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        return String(
            format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
            parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday, parts.tm_hour, parts.tm_min, parts.tm_sec,
            Int(now.tv_nsec / 1_000_000)
        )
    }
}
