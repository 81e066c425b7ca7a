/// One listening socket and the REAPI instances it serves.
public struct ServerConfig: Sendable, Equatable, Decodable {
  /// `host:port`; port 0 picks a free port (tests).
  public var listen: String
  /// Largest request message (and BatchUpdateBlobs total) accepted.
  public var maxMessageBytes: Int
  /// Instance name → what it serves. `""` is the default instance.
  public var instances: [String: InstanceConfig]
  /// Name of a scheduler whose WorkerAPI this listener serves (workers connect here).
  public var workerAPI: String?
  /// Connection caps, buffering bound and timeouts.
  public var limits: ConnectionLimitsConfig
  /// TLS (and client certificates); absent: plaintext h2c.
  public var tls: ListenerTLSConfig?
  /// Compression of response messages; absent: off.
  public var responseCompression: ResponseCompressionConfig?

  public static let defaultMaxMessageBytes = 4 * 1024 * 1024

  public init(
    listen: String, maxMessageBytes: Int = Self.defaultMaxMessageBytes,
    instances: [String: InstanceConfig], workerAPI: String? = nil,
    limits: ConnectionLimitsConfig = .init(), tls: ListenerTLSConfig? = nil,
    responseCompression: ResponseCompressionConfig? = nil
  ) {
    self.listen = listen
    self.maxMessageBytes = maxMessageBytes
    self.instances = instances
    self.workerAPI = workerAPI
    self.limits = limits
    self.tls = tls
    self.responseCompression = responseCompression
  }

  public init(from decoder: any Decoder) throws {
    let o = try ConfigObject(
      decoder,
      allowedKeys: [
        "listen", "max_message_bytes", "instances", "worker_api", "limits", "tls",
        "response_compression",
      ])
    responseCompression = try o.decode(ResponseCompressionConfig.self, "response_compression")
    workerAPI = try o.string("worker_api")
    tls = try o.decode(ListenerTLSConfig.self, "tls")
    limits = try o.decode(ConnectionLimitsConfig.self, "limits") ?? .init()
    listen = try o.requiredString("listen")
    guard Self.splitHostPort(listen) != nil else {
      throw o.error("listen", "expected host:port, got \"\(listen)\"")
    }
    let max = try o.integer("max_message_bytes") ?? Int64(Self.defaultMaxMessageBytes)
    guard max >= 64 * 1024, max <= 1 << 30 else {
      throw o.error("max_message_bytes", "expected 65536 to 1073741824, got \(max)")
    }
    maxMessageBytes = Int(max)
    let instances = try o.decode([String: InstanceConfig].self, "instances") ?? [:]
    guard !instances.isEmpty || workerAPI != nil else {
      throw o.error("instances", "at least one instance is required (or a worker_api)")
    }
    for name in instances.keys {
      if let problem = InstanceConfig.problem(withName: name) {
        throw ConfigError(path: o.path("instances") + ".\"\(name)\"", problem)
      }
    }
    self.instances = instances
  }

  /// `("127.0.0.1", 50051)` from `127.0.0.1:50051`; IPv6 as `[::1]:50051`.
  public static func splitHostPort(_ address: String) -> (host: String, port: Int)? {
    guard let colon = address.lastIndex(of: ":"),
      let port = Int(address[address.index(after: colon)...]), (0...65535).contains(port)
    else { return nil }
    var host = String(address[..<colon])
    if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
    guard !host.isEmpty else { return nil }
    return (host, port)
  }
}

/// The services of one instance name, each naming a store from `stores`.
public struct InstanceConfig: Sendable, Equatable, Decodable {
  /// Store for ContentAddressableStorage and ByteStream; absent: those services answer
  /// UNIMPLEMENTED for this instance.
  public var cas: String?
  /// Store for the ActionCache service.
  public var actionCache: String?
  /// Whether clients may write the action cache (UpdateActionResult).
  public var actionCacheUpdates: Bool
  /// Name of the scheduler behind Execution and Operations for this instance; absent: no
  /// remote execution (not advertised in Capabilities).
  public var execution: String?

  public init(
    cas: String?, actionCache: String?, actionCacheUpdates: Bool = true, execution: String? = nil
  ) {
    self.cas = cas
    self.actionCache = actionCache
    self.actionCacheUpdates = actionCacheUpdates
    self.execution = execution
  }

  public init(from decoder: any Decoder) throws {
    let o = try ConfigObject(
      decoder, allowedKeys: ["cas", "action_cache", "action_cache_updates", "execution"])
    cas = try o.string("cas")
    execution = try o.string("execution")
    actionCache = try o.string("action_cache")
    actionCacheUpdates = try o.bool("action_cache_updates") ?? true
  }

  /// Path segments REAPI reserves cannot appear in an instance name.
  static let reservedSegments: Set<String> = [
    "blobs", "uploads", "actions", "actionResults", "operations", "capabilities",
    "compressed-blobs",
  ]

  static func problem(withName name: String) -> String? {
    guard !name.isEmpty else { return nil }
    if name.hasPrefix("/") || name.hasSuffix("/") {
      return "instance names must not start or end with \"/\""
    }
    for segment in name.split(separator: "/", omittingEmptySubsequences: false) {
      if segment.isEmpty { return "instance names must not contain empty path segments" }
      if reservedSegments.contains(String(segment)) {
        return "instance names must not contain the reserved segment \"\(segment)\""
      }
    }
    return nil
  }
}
