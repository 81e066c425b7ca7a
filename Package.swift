// swift-tools-version:6.0
import PackageDescription

let strict: [SwiftSetting] = [.swiftLanguageMode(.v6)]

let package = Package(
  name: "Apus",
  platforms: [.macOS(.v15)],
  products: [
    .executable(name: "apus", targets: ["apus"])
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
    .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
    .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
    .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
    .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.36.0"),
    .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.0.0"),
    .package(url: "https://github.com/apple/swift-metrics.git", from: "2.5.0"),
    .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.1.0"),
    .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
  ],
  targets: [
    // C libraries, exposed only through module maps.
    .systemLibrary(
      name: "CNGHTTP2", pkgConfig: "libnghttp2", providers: [.apt(["libnghttp2-dev"])]),
    .systemLibrary(name: "COpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
    .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
    .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
    // Two C helpers Swift's Glibc module cannot reach: mallopt and posix_spawn's
    // addchdir_np / process-group attributes.
    .target(name: "CApusSystem"),

    // Protobuf wire codec and the REAPI messages. Pure Swift: no I/O, no NIO.
    .target(name: "ApusProto", swiftSettings: strict),
    // gRPC over HTTP/2 (nghttp2), knows nothing of REAPI. It takes only `RPCStatusCode`
    // from ApusProto (re-exported), so every layer shares one status vocabulary.
    .target(
      name: "ApusRPC",
      dependencies: [
        "ApusProto", "CNGHTTP2", "CZlib", "CZstd", "CApusSystem",
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOSSL", package: "swift-nio-ssl"),
        .product(name: "NIOTLS", package: "swift-nio"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "Metrics", package: "swift-metrics"),
      ],
      swiftSettings: strict),
    .target(name: "ApusConfig", swiftSettings: strict),
    .target(
      name: "ApusStore",
      dependencies: [
        "ApusProto", "ApusConfig", "ApusRPC", "COpenSSL",
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "AsyncHTTPClient", package: "async-http-client"),
        .product(name: "NIOSSL", package: "swift-nio-ssl"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "Metrics", package: "swift-metrics"),
      ],
      swiftSettings: strict),
    // Queue, matching, dedup and operation state; knows nothing of gRPC.
    .target(
      name: "ApusScheduler",
      dependencies: [
        "ApusProto", "ApusConfig", .product(name: "Logging", package: "swift-log"),
        .product(name: "Metrics", package: "swift-metrics"),
      ],
      swiftSettings: strict),
    // The scheduler's shared state in PostgreSQL (`state: {"postgres": …}`): schema and
    // migrations, queue claims, worker leases, notifications. Above ApusScheduler, which
    // stays free of I/O.
    .target(
      name: "ApusSchedulerPostgres",
      dependencies: [
        "ApusProto", "ApusConfig", "ApusScheduler",
        .product(name: "PostgresNIO", package: "postgres-nio"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOSSL", package: "swift-nio-ssl"),
        .product(name: "Logging", package: "swift-log"),
      ],
      swiftSettings: strict),
    .target(
      name: "ApusServices",
      dependencies: [
        "ApusProto", "ApusRPC", "ApusStore", "ApusConfig", "ApusScheduler",
        .product(name: "Logging", package: "swift-log"),
        .product(name: "JWTKit", package: "jwt-kit"),
        .product(name: "CoreMetrics", package: "swift-metrics"),
      ],
      swiftSettings: strict),
    // Runs actions: fetch inputs, execute, upload outputs; talks to scheduler and CAS by gRPC.
    .target(
      name: "ApusWorker",
      dependencies: [
        "ApusProto", "ApusRPC", "ApusStore", "ApusConfig", "CApusSystem",
        .product(name: "Logging", package: "swift-log"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "UnixSignals", package: "swift-service-lifecycle"),
        .product(name: "Metrics", package: "swift-metrics"),
      ],
      swiftSettings: strict),
    .target(
      name: "ApusServer",
      dependencies: [
        "ApusRPC", "ApusServices", "ApusStore", "ApusConfig", "ApusScheduler", "ApusSchedulerPostgres",
        .product(name: "Logging", package: "swift-log"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "UnixSignals", package: "swift-service-lifecycle"),
      ],
      swiftSettings: strict),
    // The operator's HTTP listener: /metrics (Prometheus), /healthz, /readyz, /status, the
    // status page, /drain. Above the server and the workers, as it reports on both.
    .target(
      name: "ApusAdmin",
      dependencies: [
        "ApusServer", "ApusWorker", "ApusServices", "ApusStore", "ApusScheduler", "ApusConfig", "ApusRPC",
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "NIOSSL", package: "swift-nio-ssl"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "CoreMetrics", package: "swift-metrics"),
        .product(name: "Prometheus", package: "swift-prometheus"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
      ],
      swiftSettings: strict),
    .executableTarget(
      name: "apus",
      dependencies: [
        "ApusAdmin", "ApusServer", "ApusServices", "ApusConfig", "ApusWorker", "CApusSystem",
        .product(name: "CoreMetrics", package: "swift-metrics"),
        .product(name: "AsyncHTTPClient", package: "async-http-client"),
        .product(name: "NIOSSL", package: "swift-nio-ssl"),
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
      ],
      swiftSettings: strict),

    // What several test targets share: a recording swift-metrics factory, `eventually`.
    .target(
      name: "ApusTestSupport",
      dependencies: [.product(name: "CoreMetrics", package: "swift-metrics")],
      path: "Tests/ApusTestSupport", swiftSettings: strict),
    .testTarget(name: "ApusProtoTests", dependencies: ["ApusProto"], swiftSettings: strict),
    .testTarget(name: "ApusRPCTests", dependencies: ["ApusRPC", "ApusTestSupport"], swiftSettings: strict),
    .testTarget(name: "ApusConfigTests", dependencies: ["ApusConfig"], swiftSettings: strict),
    .testTarget(
      name: "ApusSchedulerTests", dependencies: ["ApusScheduler", "ApusProto", "ApusConfig"],
      swiftSettings: strict),
    .testTarget(
      name: "ApusSchedulerPostgresTests",
      dependencies: [
        "ApusSchedulerPostgres", "ApusScheduler", "ApusProto", "ApusConfig",
        .product(name: "PostgresNIO", package: "postgres-nio"),
        .product(name: "Logging", package: "swift-log"),
      ],
      swiftSettings: strict),
    .testTarget(
      name: "ApusStoreTests",
      dependencies: [
        "ApusStore", "ApusProto", "ApusTestSupport", .product(name: "CoreMetrics", package: "swift-metrics"),
      ],
      swiftSettings: strict),
    .testTarget(
      name: "ApusServicesTests",
      dependencies: [
        "ApusServices", "ApusStore", "ApusProto", "ApusRPC", "ApusScheduler", "ApusConfig",
        "ApusTestSupport", .product(name: "JWTKit", package: "jwt-kit"),
      ],
      swiftSettings: strict),
    .testTarget(
      name: "ApusWorkerTests",
      dependencies: [
        "ApusWorker", "ApusServices", "ApusScheduler", "ApusStore", "ApusProto", "ApusRPC", "ApusConfig",
        "ApusTestSupport", .product(name: "CoreMetrics", package: "swift-metrics"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "ServiceLifecycleTestKit", package: "swift-service-lifecycle"),
      ],
      swiftSettings: strict),
    .testTarget(
      name: "ApusAdminTests",
      dependencies: [
        "ApusAdmin", "ApusServer", "ApusServices", "ApusConfig", "ApusScheduler",
        .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "Logging", package: "swift-log"),
      ],
      swiftSettings: strict),
    .testTarget(
      name: "ApusServerTests",
      dependencies: [
        "ApusServer", "ApusStore", "ApusProto", "ApusRPC", "ApusConfig", "ApusTestSupport",
        .product(name: "Logging", package: "swift-log"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "ServiceLifecycleTestKit", package: "swift-service-lifecycle"),
      ],
      swiftSettings: strict),
  ]
)
