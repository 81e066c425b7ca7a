import ApusAdmin
import ApusConfig
import ApusServer
import ApusServices
import ApusWorker
import ArgumentParser
import CApusSystem
import Foundation
import Logging
import ServiceLifecycle

/// `apus`: the remote cache server. One JSON config, any mix of roles.
@main
struct Apus: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "apus",
    abstract: "Remote build cache for Bazel (Remote Execution API v2).",
    discussion: """
      With no argument, runs the built-in default: a cache on 127.0.0.1:50051 with its data \
      under ~/.cache/apus. `apus CONFIG` runs a JSON (JSON5) config; `apus check CONFIG` \
      validates one; `apus token --principal NAME` makes a bearer token.
      """,
    version: ApusVersion.string,
    subcommands: [Run.self, Check.self, Token.self, Probe.self],
    defaultSubcommand: Run.self)
}

enum ApusVersion {
  static let string = "0.1.0"
}

struct Run: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Run the server (the default command).")

  @Argument(help: "Path of the JSON config. Omit to run the built-in default.")
  var config: String?

  func run() async throws {
    let configuration = try loadConfiguration(config)
    let level = Logger.Level(rawValue: configuration.global.logLevel) ?? .info
    LogBootstrap.bootstrap(level: level, format: configuration.global.logFormat)
    let logger = Logger(label: "apus")
    let home = ProcessInfo.processInfo.environment["HOME"] ?? NSHomeDirectory()
    // Metric handles are made from here on, so the registry is in place before any role.
    // Without an admin listener nothing would read them: swift-metrics stays a no-op.
    if configuration.admin != nil { MetricsRegistry.bootstrap() }
    let server = configuration.servers.isEmpty ? nil : ApusServer(config: configuration, home: home, logger: logger)
    let workers = configuration.workers.map { Worker(config: $0.expandingTilde(home: home), logger: logger) }
    // Graceful shutdown runs in reverse order: workers drain their running actions while the
    // server is still up to take their results, and the admin listener, first, stops last so
    // /readyz answers 503 throughout.
    var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
    let targets = AdminTargets(config: configuration, server: server, workers: workers)
    if let admin = configuration.admin {
      do {
        services.append(
          .init(service: try await AdminServer(config: admin, targets: targets, version: ApusVersion.string, logger: logger)))
      } catch let error as ConfigError {
        logger.critical("config error: \(error)")
        throw ExitCode(2)
      }
    }
    if let server { services.append(.init(service: server)) }
    for worker in workers { services.append(.init(service: worker)) }
    // Last, so graceful shutdown reaches it first: STOPPING=1 before anything drains.
    let notifier = SystemdNotifier(environment: ProcessInfo.processInfo.environment)
    if notifier.isEnabled {
      services.append(
        .init(
          service: SystemdReadiness(targets: targets, notifier: notifier, logger: logger),
          successTerminationBehavior: .ignore))
    }
    let group = ServiceGroup(
      configuration: .init(
        services: services,
        gracefulShutdownSignals: [.sigterm, .sigint],
        logger: logger))
    do {
      try await group.run()
    } catch let error as ConfigError {
      logger.critical("config error: \(error)")
      throw ExitCode(2)
    }
  }
}

struct Check: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Validate a config and print what it would run.")

  @Argument(help: "Path of the JSON config.")
  var config: String

  func run() async throws {
    let c = try loadConfiguration(config)
    if let auth = c.auth {
      do {
        _ = try await Authorizer(config: auth, logger: Logger(label: "apus"))
      } catch {
        FileHandle.standardError.write(Data("apus: config error: \(error)\n".utf8))
        throw ExitCode(2)
      }
    }
    print("config OK: \(config)")
    for name in c.stores.keys.sorted() {
      print("  store \(name): \(describe(c.stores[name]!))")
    }
    for name in c.schedulers.keys.sorted() {
      let rules = c.schedulers[name]!.platformProperties.sorted { $0.key < $1.key }
        .map { "\($0.key)=\($0.value.rawValue)" }.joined(separator: ", ")
      var state = "in memory"
      if case .postgres(let pg) = c.schedulers[name]!.state {
        state = "shared in PostgreSQL \(pg.displayName) (sslmode \(pg.sslMode.rawValue), lease \(pg.leaseSeconds) s)"
      }
      print("  scheduler \(name): properties \(rules); state \(state)")
    }
    for server in c.servers {
      let workerAPI = server.workerAPI.map { ", worker_api for scheduler \($0)" } ?? ""
      let tls = server.tls.map { ", TLS" + ($0.clientAuth == .none ? "" : ", client certificates \($0.clientAuth == .require ? "required" : "optional")") } ?? ", plaintext"
      print("  server \(server.listen) (max message \(server.maxMessageBytes) bytes\(tls)\(workerAPI))")
      for (name, i) in server.instances.sorted(by: { $0.key < $1.key }) {
        var roles: [String] = []
        if let cas = i.cas { roles.append("cas=\(cas) (+bytestream)") }
        if let ac = i.actionCache {
          roles.append("action_cache=\(ac)\(i.actionCacheUpdates ? "" : " (read-only)")")
        }
        if let scheduler = i.execution { roles.append("execution=\(scheduler)") }
        print("    instance \"\(name)\": \(roles.joined(separator: ", "))")
      }
    }
    if let admin = c.admin {
      let access = c.auth == nil ? "open to all" : admin.anonymousRead ? "reads open, drain needs admin" : "needs admin"
      print("  admin \(admin.listen) (\(admin.tls == nil ? "HTTP" : "HTTPS"), \(access))")
      if c.auth == nil, let (host, _) = ServerConfig.splitHostPort(admin.listen), !Self.isLoopback(host) {
        print(
          "WARNING: the admin listener \(admin.listen) is not on loopback and no auth block is configured: "
            + "anyone who can reach it can read the status feed and drain this process.")
      }
    }
    if let auth = c.auth {
      print(
        "  auth: tokens \(auth.tokens ?? "none"), jwt \(auth.jwt.map { "\($0.jwks) (aud \($0.audience))" } ?? "none"), "
          + "certificate principal \(auth.certificatePrincipal.rawValue)")
      for (name, grants) in auth.instances.sorted(by: { $0.key < $1.key }) {
        print("    instance \"\(name)\": \(Self.describe(grants))")
      }
      for (name, grants) in auth.schedulers.sorted(by: { $0.key < $1.key }) {
        print("    scheduler \(name): \(Self.describe(grants))")
      }
      if !auth.admin.isEmpty { print("    admin: \(auth.admin.sorted().joined(separator: ", "))") }
    } else {
      for server in c.servers {
        guard let (host, _) = ServerConfig.splitHostPort(server.listen), !Self.isLoopback(host) else { continue }
        print(
          "WARNING: \(server.listen) is not a loopback address and no auth block is configured: "
            + "anyone who can reach it can read and write the cache (and run actions).")
      }
    }
    for worker in c.workers {
      print(
        "  worker → scheduler \(worker.scheduler), cas \(worker.cas), \(worker.maxConcurrentActions) slots, platform \(worker.platform.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", "))")
    }
  }

  static func describe(_ grants: [String: Set<Permission>]) -> String {
    grants.sorted { $0.key < $1.key }
      .map { "\($0.key)=\($0.value.sorted().map(\.rawValue).joined(separator: "+"))" }
      .joined(separator: ", ")
  }

  static func isLoopback(_ host: String) -> Bool {
    host == "localhost" || host == "::1" || host == "[::1]" || host.hasPrefix("127.")
  }

  private func describe(_ spec: StoreSpec) -> String {
    switch spec {
    case .memory(let m): "memory(max_bytes: \(m.maxBytes.map(String.init) ?? "unlimited"))"
    case .filesystem(let f): "filesystem(\(f.path), max_bytes: \(f.maxBytes.map(String.init) ?? "unlimited"))"
    case .verify(let v): "verify(\(v.verifyHash ? "size+sha256" : "size"), \(describe(v.backend)))"
    case .fastSlow(let f):
      "fast_slow(fast: \(describe(f.fast)), slow: \(describe(f.slow))"
        + (f.writeBehind.map { ", slow_write: async, queue \($0.path)" } ?? "") + ")"
    case .sizePartitioning(let p):
      "size_partitioning(< \(p.thresholdBytes): \(describe(p.lower)), else: \(describe(p.upper)))"
    case .existenceCache(let e): "existence_cache(\(e.maxSeconds)s, \(describe(e.backend)))"
    case .completenessChecking(let c): "completeness_checking(\(describe(c.backend)), cas: \(describe(c.cas)))"
    case .grpc(let g): "grpc(\(g.url), instance \"\(g.instanceName)\", \(g.actionCache ? "action_cache" : "cas"))"
    case .shard(let s): "shard(\(s.stores.map { "\($0.weight)×\(describe($0.store))" }.joined(separator: ", ")))"
    case .s3(let s): "s3(\(s.endpoint), bucket \(s.bucket), prefix \"\(s.keyPrefix)\"\(s.maxSeconds.map { ", expiry \($0)s" } ?? ""))"
    case .ref(let name): "ref(\(name))"
    }
  }
}

struct Token: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Print a new random bearer token and its line for the auth.tokens file.",
    discussion: """
      The token (32 random bytes, base64url) goes to the client, e.g. Bazel's \
      --remote_header=authorization=Bearer TOKEN or a worker's token_file; the line \
      (its SHA-256 and the principal) goes into the token file, which never holds the token.
      """)

  @Option(help: "The principal the token stands for, as named in auth.instances.")
  var principal: String

  func validate() throws {
    guard !principal.isEmpty, !principal.contains(where: \.isWhitespace), !principal.contains("#"),
      principal != AuthConfig.anonymous
    else {
      throw ValidationError("the principal must be a non-empty name without spaces or #, not \"anonymous\"")
    }
  }

  func run() throws {
    var generator = SystemRandomNumberGenerator()
    let bytes = (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) }
    let token = Data(bytes).base64EncodedString()
      .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
      .replacingOccurrences(of: "=", with: "")
    print("token: \(token)")
    print("line:  \(TokenFile.line(token: token, principal: principal))")
  }
}

/// Loads `path`, or the built-in default; config errors exit with status 2 and the JSON path.
func loadConfiguration(_ path: String?) throws -> ApusConfiguration {
  let home = ProcessInfo.processInfo.environment["HOME"] ?? NSHomeDirectory()
  guard let path else { return .builtInDefault(home: home) }
  do {
    return try ApusConfiguration.load(path: path)
  } catch {
    FileHandle.standardError.write(Data("apus: config error: \(error)\n".utf8))
    throw ExitCode(2)
  }
}
