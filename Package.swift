// swift-tools-version: 6.2
//
// meshd — a per-host service-mesh proxy daemon (Linkerd 1.x's model on SwiftNIO).
// Module boundaries are described in docs/ARCHITECTURE.md; who may import whom:
//   MeshCore      <- pure policy and vocabulary; stdlib + swift-collections only
//   MeshConfig    <- MeshCore, Yams
//   MeshTelemetry <- MeshCore, swift-log, swift-metrics, swift-prometheus
//   MeshDiscovery <- MeshCore, MeshTelemetry, NIO
//   MeshRouting   <- MeshCore, MeshConfig, MeshDiscovery, MeshTelemetry, NIO: routers, clients
//                    and pools, and the protocol-neutral request path (dispatch, exchange)
//   MeshHTTP1     <- MeshRouting, NIOHTTP1, NIOExtras: the HTTP/1.1 codec and connections
//   MeshTLS       <- MeshRouting, NIOSSL: certificates and keys, TLS listeners and client TLS
//   MeshProxy     <- MeshRouting, MeshHTTP1, MeshTLS, ...: the data plane wired from a config (Linker)
//   MeshAdmin     <- MeshProxy, MeshRouting (snapshots), MeshDiscovery, MeshTelemetry, MeshConfig
//   meshd         <- everything (command line, wiring, lifecycle)
import PackageDescription

let nio: [Target.Dependency] = [
    .product(name: "NIOCore", package: "swift-nio"),
    .product(name: "NIOPosix", package: "swift-nio"),
    .product(name: "NIOHTTP1", package: "swift-nio"),
    .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
]

let package = Package(
    name: "meshd",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "meshd", targets: ["meshd"]),
        .executable(name: "meshd-fuzz", targets: ["MeshFuzz"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
    ],
    targets: [
        .target(
            name: "MeshCore",
            dependencies: [.product(name: "DequeModule", package: "swift-collections")]
        ),
        .target(
            name: "MeshConfig",
            dependencies: ["MeshCore", .product(name: "Yams", package: "Yams")]
        ),
        .target(
            name: "MeshTelemetry",
            dependencies: [
                "MeshCore",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .target(
            name: "MeshDiscovery",
            dependencies: ["MeshCore", "MeshTelemetry", .product(name: "Logging", package: "swift-log")] + nio
        ),
        .target(
            name: "MeshRouting",
            dependencies: [
                "MeshCore", "MeshConfig", "MeshDiscovery", "MeshTelemetry",
                .product(name: "Logging", package: "swift-log"),
            ] + nio
        ),
        .target(
            name: "MeshHTTP1",
            dependencies: [
                "MeshCore", "MeshConfig", "MeshDiscovery", "MeshTelemetry", "MeshRouting",
                .product(name: "NIOExtras", package: "swift-nio-extras"),
            ] + nio
        ),
        .target(
            name: "MeshTLS",
            dependencies: [
                "MeshCore", "MeshConfig", "MeshTelemetry", "MeshRouting",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ] + nio
        ),
        .target(
            name: "MeshProxy",
            dependencies: [
                "MeshCore", "MeshConfig", "MeshDiscovery", "MeshTelemetry", "MeshRouting", "MeshHTTP1", "MeshTLS",
                .product(name: "Logging", package: "swift-log"),
            ] + nio
        ),
        .target(
            name: "MeshAdmin",
            dependencies: [
                "MeshCore", "MeshConfig", "MeshDiscovery", "MeshProxy", "MeshRouting", "MeshTLS", "MeshTelemetry",
                .product(name: "Logging", package: "swift-log"),
            ] + nio
        ),
        .executableTarget(
            name: "meshd",
            dependencies: [
                "MeshCore", "MeshConfig", "MeshDiscovery", "MeshTelemetry", "MeshRouting", "MeshTLS", "MeshProxy", "MeshAdmin",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ] + nio
        ),
        // Fuzz targets (docs/fuzzing.md): libFuzzer drives them in a fuzzing build
        // (scripts/fuzz); a normal build replays saved inputs through them (scripts/test).
        .executableTarget(
            name: "MeshFuzz",
            dependencies: [
                "MeshCore", "MeshConfig", "MeshDiscovery", "MeshTelemetry", "MeshRouting", "MeshHTTP1",
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ] + nio
        ),
        .target(
            name: "MeshTestSupport",
            dependencies: ["MeshCore"],
            path: "Tests/MeshTestSupport"
        ),
        .testTarget(name: "MeshCoreTests", dependencies: ["MeshCore", "MeshTestSupport"]),
        .testTarget(name: "MeshConfigTests", dependencies: ["MeshConfig", "MeshCore"]),
        .testTarget(name: "MeshTelemetryTests", dependencies: ["MeshTelemetry", "MeshCore"]),
        .testTarget(name: "MeshProxyTests", dependencies: [
            "MeshProxy", "MeshRouting", "MeshHTTP1", "MeshCore", "MeshConfig", "MeshDiscovery", "MeshTelemetry", "MeshTestSupport",
            .product(name: "NIOEmbedded", package: "swift-nio"),
        ] + nio),
        .testTarget(name: "MeshDiscoveryTests", dependencies: [
            "MeshDiscovery", "MeshCore", "MeshTelemetry", "MeshTestSupport", .product(name: "Logging", package: "swift-log"),
        ] + nio),
    ]
)

// Release builds: generic MeshCore policies (the pool state machine, caches) are specialized in
// the modules that use them, and exclusivity is checked at compile time only. Both measured in
// docs/performance.md.
for target in package.targets where target.type != .test {
    target.swiftSettings = (target.swiftSettings ?? []) + [
        .unsafeFlags(["-cross-module-optimization", "-enforce-exclusivity=unchecked"], .when(configuration: .release)),
    ]
}
