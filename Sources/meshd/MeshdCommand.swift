// The command line: `meshd [run] [--config PATH]`, `meshd check --config PATH`, `meshd version`.

import ArgumentParser
import Foundation
import Logging
import MeshConfig
import MeshTLS
import MeshTelemetry

@main
struct MeshdCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "meshd",
        abstract: "A per-host service-mesh proxy: Linkerd 1.x configs, native speed.",
        version: MeshdVersion.string,
        subcommands: [RunCommand.self, CheckCommand.self, DelegateCommand.self, VersionCommand.self],
        defaultSubcommand: RunCommand.self
    )
}

struct CommonOptions: ParsableArguments {
    @Option(name: .long, help: "Config file (default: config/meshd.yaml if present, else /etc/meshd/meshd.yaml).")
    var config: String?

    @Option(name: .long, help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "info"

    @Option(name: .long, help: "text or json.")
    var logFormat: String = "text"

    func validate() throws {
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
        guard LogFormat(rawValue: logFormat) != nil else {
            throw ValidationError("--log-format must be text or json")
        }
    }

    /// The config path: the flag, else the working directory's config/meshd.yaml, else /etc.
    var configPath: String {
        if let config { return config }
        if FileManager.default.fileExists(atPath: "config/meshd.yaml") { return "config/meshd.yaml" }
        return "/etc/meshd/meshd.yaml"
    }

    func bootstrapLogging() -> Logger {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        let format = LogFormat(rawValue: logFormat) ?? .text
        LoggingSystem.bootstrap { label in StderrLogHandler(label: label, format: format, level: level) }
        return Logger(label: "meshd")
    }
}

struct VersionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "version", abstract: "Print meshd's version.")

    func run() {
        print("meshd \(MeshdVersion.string)")
    }
}

struct CheckCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Validate a config file and report every problem; exit status 1 if there is any."
    )

    @OptionGroup var options: CommonOptions

    @Flag(name: .long, help: "Do not test whether the listen ports are free.")
    var noBindCheck = false

    func run() async throws {
        let path = options.configPath
        var errors: [ConfigError] = []
        var loaded: MeshdConfig?
        do {
            loaded = try ConfigLoader.load(path: path)
        } catch {
            errors = error.errors
        }
        if let config = loaded {
            // Every certificate, key and CA file, read and checked as start-up would.
            errors += TLSSet.load(config, metrics: MeshMetrics().tls, logger: Logger(label: "meshd.check", factory: { _ in SwiftLogNoOpLogHandler() })).1
        }
        if let config = loaded, !noBindCheck {
            errors += PortCheck.unavailable(config)
        }
        if errors.isEmpty {
            print("\(path): ok")
            return
        }
        FileHandle.standardError.write(Data((ConfigErrors(errors).description + "\n").utf8))
        throw ExitCode(1)
    }
}

enum MeshdVersion {
    static let string = "0.1.0"
}
