import Foundation

/// The whole `apus` configuration: named stores and the servers that use them.
public struct ApusConfiguration: Sendable, Equatable, Decodable {
  public var stores: [String: StoreSpec]
  public var schedulers: [String: SchedulerConfig]
  public var servers: [ServerConfig]
  public var workers: [WorkerConfig]
  public var global: GlobalConfig
  /// Key `auth`: authentication and per-instance permissions; nil: every call is allowed.
  public var auth: AuthConfig?
  /// Key `admin`: the operator's HTTP listener; nil: none.
  public var admin: AdminConfig?

  public init(
    stores: [String: StoreSpec], schedulers: [String: SchedulerConfig] = [:],
    servers: [ServerConfig], workers: [WorkerConfig] = [], global: GlobalConfig = .init(),
    auth: AuthConfig? = nil, admin: AdminConfig? = nil
  ) {
    self.stores = stores
    self.schedulers = schedulers
    self.servers = servers
    self.workers = workers
    self.global = global
    self.auth = auth
    self.admin = admin
  }

  public init(from decoder: any Decoder) throws {
    let o = try ConfigObject(
      decoder, allowedKeys: ["stores", "schedulers", "servers", "workers", "global", "auth", "admin"])
    stores = try o.decode([String: StoreSpec].self, "stores") ?? [:]
    schedulers = try o.decode([String: SchedulerConfig].self, "schedulers") ?? [:]
    servers = try o.decode([ServerConfig].self, "servers") ?? []
    workers = try o.decode([WorkerConfig].self, "workers") ?? []
    global = try o.decode(GlobalConfig.self, "global") ?? GlobalConfig()
    auth = try o.decode(AuthConfig.self, "auth")
    admin = try o.decode(AdminConfig.self, "admin")
    try Self.checkReferences(stores)
    try Self.checkWriteBehind(stores)
    guard !servers.isEmpty || !workers.isEmpty else {
      throw o.error("servers", "at least one server or worker is required")
    }
    func check(_ ref: String?, in names: some Collection<String>, kind: String, path: String) throws {
      guard let ref, !names.contains(ref) else { return }
      throw ConfigError(
        path: path, "no \(kind) named \"\(ref)\"; defined: \(names.sorted().joined(separator: ", "))")
    }
    for name in (auth?.schedulers.keys).map(Array.init)?.sorted() ?? [] {
      try check(name, in: schedulers.keys, kind: "scheduler", path: "auth.schedulers.\"\(name)\"")
    }
    for (i, server) in servers.enumerated() {
      try check(server.workerAPI, in: schedulers.keys, kind: "scheduler", path: "servers[\(i)].worker_api")
      for (name, instance) in server.instances.sorted(by: { $0.key < $1.key }) {
        let base = "servers[\(i)].instances.\"\(name)\""
        try check(instance.cas, in: stores.keys, kind: "store", path: "\(base).cas")
        try check(instance.actionCache, in: stores.keys, kind: "store", path: "\(base).action_cache")
        try check(instance.execution, in: schedulers.keys, kind: "scheduler", path: "\(base).execution")
        if instance.execution != nil && (instance.cas == nil || instance.actionCache == nil) {
          throw ConfigError(path: "\(base).execution", "remote execution needs cas and action_cache on the instance")
        }
      }
    }
  }

  /// Every `ref` names a defined store, and no store reaches itself through refs.
  static func checkReferences(_ stores: [String: StoreSpec]) throws {
    for (name, spec) in stores.sorted(by: { $0.key < $1.key }) {
      for ref in spec.references where stores[ref.name] == nil {
        throw ConfigError(
          path: "stores.\(name).\(ref.path)",
          "no store named \"\(ref.name)\"; defined: \(stores.keys.sorted().joined(separator: ", "))")
      }
    }
    var done: Set<String> = []
    func visit(_ name: String, _ chain: [String]) throws {
      if let start = chain.firstIndex(of: name) {
        throw ConfigError(
          path: "stores.\(chain[start])",
          "stores refer to each other in a cycle: \((chain[start...] + [name]).joined(separator: " → "))")
      }
      guard !done.contains(name), let spec = stores[name] else { return }
      for ref in spec.references { try visit(ref.name, chain + [name]) }
      done.insert(name)
    }
    for name in stores.keys.sorted() { try visit(name, []) }
  }

  /// Every `async` fast_slow store has a fast tier that keeps blobs on disk: what the
  /// write-behind queue has not copied yet lives only there.
  static func checkWriteBehind(_ stores: [String: StoreSpec]) throws {
    func visit(_ spec: StoreSpec, _ path: String) throws {
      if case .fastSlow(let f) = spec, f.slowWrite == .async, !f.fast.isDurable(in: stores) {
        throw ConfigError(
          path: "\(path).fast_slow.slow_write",
          "async needs a fast tier that keeps blobs on disk (filesystem stores with sync data or full, "
            + "or wrappers over only those); memory or a remote store would lose what is queued")
      }
      for child in spec.children { try visit(child.spec, "\(path).\(child.path)") }
    }
    for (name, spec) in stores.sorted(by: { $0.key < $1.key }) { try visit(spec, "stores.\(name)") }
  }

  /// Parses JSON (JSON5 allowed: comments, trailing commas, unquoted keys).
  public static func parse(
    _ data: Data, environment: [String: String] = ProcessInfo.processInfo.environment
  ) throws(ConfigError) -> ApusConfiguration {
    // Foundation's JSON5 scanner traps on invalid UTF-8 inside a comment (found by
    // Fuzz/targets/ConfigFuzzer.swift), so the encoding is checked first.
    guard String(validating: data, as: UTF8.self) != nil else {
      throw ConfigError(path: "", "the config is not valid UTF-8")
    }
    let decoder = JSONDecoder()
    decoder.allowsJSON5 = true
    decoder.userInfo[.environment] = EnvironmentExpansion(variables: environment)
    do {
      return try decoder.decode(ApusConfiguration.self, from: data)
    } catch let error as ConfigError {
      throw error
    } catch let DecodingError.typeMismatch(type, context) {
      throw ConfigError(path: jsonPath(context.codingPath), "expected \(describe(type))")
    } catch let DecodingError.valueNotFound(type, context) {
      throw ConfigError(path: jsonPath(context.codingPath), "expected \(describe(type)), got null")
    } catch let DecodingError.keyNotFound(key, context) {
      throw ConfigError(path: jsonPath(context.codingPath + [key]), "is required")
    } catch let DecodingError.dataCorrupted(context) {
      let underlying = context.underlyingError.map { " (\($0))" } ?? ""
      throw ConfigError(
        path: jsonPath(context.codingPath), "not valid JSON: \(context.debugDescription)\(underlying)")
    } catch {
      throw ConfigError(path: "", "could not read the config: \(error)")
    }
  }

  public static func load(
    path: String, environment: [String: String] = ProcessInfo.processInfo.environment
  ) throws(ConfigError) -> ApusConfiguration {
    guard let data = FileManager.default.contents(atPath: path) else {
      throw ConfigError(path: "", "cannot read config file \(path)")
    }
    return try parse(data, environment: environment)
  }

  private static func describe(_ type: Any.Type) -> String {
    switch type {
    case is String.Type: "a string"
    case is Bool.Type: "true or false"
    case is Int64.Type, is Int.Type: "an integer"
    case is [String: StoreSpec].Type, is [String: InstanceConfig].Type: "an object"
    case is [ServerConfig].Type: "an array"
    default: "an object"
    }
  }
}

/// Process-wide settings.
public struct GlobalConfig: Sendable, Equatable, Decodable {
  /// How log records are written to stderr.
  public enum LogFormat: String, Sendable, Equatable, CaseIterable {
    /// One human-readable line per record (swift-log's `StreamLogHandler`).
    case text
    /// One JSON object per line, for log shippers (Loki, CloudWatch): `time`, `level`,
    /// `label`, `message` and the metadata (see `JSONLogHandler`).
    case json
  }

  /// trace, debug, info, notice, warning, error, critical.
  public var logLevel: String
  /// Key `log_format` (`text`): `text` or `json`.
  public var logFormat: LogFormat
  /// How long SIGTERM/SIGINT wait for running calls before closing connections.
  public var shutdownGraceSeconds: Int
  /// Request bytes all connections together may hold in memory; past it the connections
  /// holding the most stop being read (throttled, not failed).
  public var maxBufferedBytes: Int
  /// Key `slow_request_seconds` (10): a call that takes at least this long is logged as a
  /// warning with its method and peer (long-lived streams excepted); 0 turns it off.
  public var slowRequestSeconds: Int

  static let logLevels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]
  public static let defaultMaxBufferedBytes = 128 * 1024 * 1024

  public init(
    logLevel: String = "info", logFormat: LogFormat = .text, shutdownGraceSeconds: Int = 10,
    maxBufferedBytes: Int = Self.defaultMaxBufferedBytes, slowRequestSeconds: Int = 10
  ) {
    self.logLevel = logLevel
    self.logFormat = logFormat
    self.shutdownGraceSeconds = shutdownGraceSeconds
    self.maxBufferedBytes = maxBufferedBytes
    self.slowRequestSeconds = slowRequestSeconds
  }

  public init(from decoder: any Decoder) throws {
    let o = try ConfigObject(
      decoder,
      allowedKeys: [
        "log_level", "log_format", "shutdown_grace_seconds", "max_buffered_bytes",
        "slow_request_seconds",
      ])
    maxBufferedBytes = Int(
      try o.integer("max_buffered_bytes") ?? Int64(Self.defaultMaxBufferedBytes))
    guard maxBufferedBytes >= 1 << 20 else {
      throw o.error("max_buffered_bytes", "expected at least 1048576, got \(maxBufferedBytes)")
    }
    logLevel = try o.string("log_level") ?? "info"
    guard Self.logLevels.contains(logLevel) else {
      throw o.error("log_level", "expected one of \(Self.logLevels.joined(separator: ", ")), got \"\(logLevel)\"")
    }
    logFormat = try o.choice("log_format") ?? .text
    shutdownGraceSeconds = Int(try o.integer("shutdown_grace_seconds", positive: false) ?? 10)
    slowRequestSeconds = Int(try o.integer("slow_request_seconds", positive: false) ?? 10)
  }
}
