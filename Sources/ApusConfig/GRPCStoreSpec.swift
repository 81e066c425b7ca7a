/// `grpc`: another REAPI server's CAS or action cache, e.g. a shared cache behind a local
/// proxy.
public struct GRPCStoreSpec: Sendable, Equatable, Decodable {
  /// `grpc://host:port`, or `grpcs://host:port` for TLS. Required.
  public var url: String
  /// The remote instance name (key `instance_name`, default "").
  public var instanceName: String
  /// Key `role`: `action_cache` (true) or `cas` (false, the default).
  public var actionCache: Bool
  /// Each call's deadline, or the caller's if sooner (key `timeout_seconds`, default 60;
  /// a ByteStream transfer of a large blob is one call).
  public var timeoutSeconds: Int
  /// Establishing the connection (key `connect_timeout_seconds`, default 2).
  public var connectTimeoutSeconds: Int
  /// When to stop calling a server that does not answer.
  public var circuitBreaker: CircuitBreakerConfig
  /// For a `grpcs://` URL: trust roots, client certificate, server name.
  public var tls: ClientTLSConfig?
  /// Key `token_file`: a file holding the bearer token sent on every call
  /// (`authorization: Bearer …`), read at start; nil: none sent.
  public var tokenFile: String?

  public init(
    url: String, instanceName: String = "", actionCache: Bool = false, timeoutSeconds: Int = 60,
    connectTimeoutSeconds: Int = 2, circuitBreaker: CircuitBreakerConfig = .init(),
    tokenFile: String? = nil
  ) {
    self.url = url
    self.instanceName = instanceName
    self.actionCache = actionCache
    self.timeoutSeconds = timeoutSeconds
    self.connectTimeoutSeconds = connectTimeoutSeconds
    self.circuitBreaker = circuitBreaker
    self.tokenFile = tokenFile
  }

  public init(from decoder: any Decoder) throws {
    let o = try ConfigObject(
      decoder,
      allowedKeys: [
        "url", "instance_name", "role", "timeout_seconds", "connect_timeout_seconds", "circuit_breaker", "tls",
        "token_file",
      ])
    url = try o.requiredString("url")
    let (valid, grpcs) = GRPCURL.check(url)
    guard valid else { throw o.error("url", "expected grpc://host:port or grpcs://host:port, got \"\(url)\"") }
    tls = try o.decode(ClientTLSConfig.self, "tls")
    if tls != nil && !grpcs { throw o.error("tls", "is only used with a grpcs:// url") }
    let role = try o.string("role") ?? "cas"
    guard role == "cas" || role == "action_cache" else {
      throw o.error("role", "expected cas or action_cache, got \"\(role)\"")
    }
    instanceName = try o.string("instance_name") ?? ""
    actionCache = role == "action_cache"
    timeoutSeconds = Int(try o.integer("timeout_seconds") ?? 60)
    connectTimeoutSeconds = Int(try o.integer("connect_timeout_seconds") ?? 2)
    circuitBreaker = try o.decode(CircuitBreakerConfig.self, "circuit_breaker") ?? .init()
    tokenFile = try o.string("token_file")
  }
}
