import Foundation

/// The whole `apus` configuration: named stores and the servers that use them.
public struct ApusConfiguration: Sendable, Equatable, Decodable {
  public var stores: [String: StoreSpec]
  public var servers: [ServerConfig]
  public var global: GlobalConfig

  public init(stores: [String: StoreSpec], servers: [ServerConfig], global: GlobalConfig = .init()) {
    self.stores = stores
    self.servers = servers
    self.global = global
  }

  public init(from decoder: any Decoder) throws {
    let o = try ConfigObject(decoder, allowedKeys: ["stores", "servers", "global"])
    stores = try o.decode([String: StoreSpec].self, "stores") ?? [:]
    servers = try o.decode([ServerConfig].self, "servers") ?? []
    global = try o.decode(GlobalConfig.self, "global") ?? GlobalConfig()
    guard !servers.isEmpty else { throw o.error("servers", "at least one server is required") }
    for (i, server) in servers.enumerated() {
      for (name, instance) in server.instances.sorted(by: { $0.key < $1.key }) {
        let base = "servers[\(i)].instances.\"\(name)\""
        for (key, ref) in [("cas", instance.cas), ("action_cache", instance.actionCache)] {
          if let ref, stores[ref] == nil {
            throw ConfigError(
              path: "\(base).\(key)",
              "no store named \"\(ref)\"; defined stores: \(stores.keys.sorted().joined(separator: ", "))")
          }
        }
      }
    }
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
  /// trace, debug, info, notice, warning, error, critical.
  public var logLevel: String
  /// How long SIGTERM/SIGINT wait for running calls before closing connections.
  public var shutdownGraceSeconds: Int

  static let logLevels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]

  public init(logLevel: String = "info", shutdownGraceSeconds: Int = 10) {
    self.logLevel = logLevel
    self.shutdownGraceSeconds = shutdownGraceSeconds
  }

  public init(from decoder: any Decoder) throws {
    let o = try ConfigObject(decoder, allowedKeys: ["log_level", "shutdown_grace_seconds"])
    logLevel = try o.string("log_level") ?? "info"
    guard Self.logLevels.contains(logLevel) else {
      throw o.error("log_level", "expected one of \(Self.logLevels.joined(separator: ", ")), got \"\(logLevel)\"")
    }
    shutdownGraceSeconds = Int(try o.integer("shutdown_grace_seconds", positive: false) ?? 10)
  }
}
