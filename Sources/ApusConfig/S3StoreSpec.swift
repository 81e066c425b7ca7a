/// `s3`: any S3-compatible endpoint (AWS, MinIO, Ceph RGW, R2). Credentials come from the
/// config's keys when given, else from the AWS chain: environment, container credentials,
/// EC2 instance role (key `credentials`, ``S3CredentialsMode``).
public struct S3StoreSpec: Sendable, Equatable, Decodable {
  public var endpoint: String
  public var region: String
  public var bucket: String
  public var keyPrefix: String
  /// `endpoint/bucket/key` (MinIO, Ceph, tests) instead of `bucket.endpoint/key`.
  public var pathStyle: Bool
  public var accessKeyID: String?
  public var secretAccessKey: String?
  public var sessionToken: String?
  /// Where the signing keys come from (key `credentials`; default `static` when
  /// `access_key_id` is given, else `auto`).
  public var credentials: S3CredentialsMode
  public var multipartThresholdBytes: Int64
  public var partBytes: Int64
  /// Attempts per idempotent request (GET, HEAD, PUT, DELETE) on a 5xx, 429 or a connection
  /// failure; POSTs are tried once.
  public var maxAttempts: Int
  /// Establishing a connection (key `connect_timeout_seconds`, default 2).
  public var connectTimeoutSeconds: Int
  /// From sending a request to the response head, plus a second per MiB of request body
  /// (key `first_byte_timeout_seconds`, default 10).
  public var firstByteTimeoutSeconds: Int
  /// Between two chunks of a response body (key `idle_timeout_seconds`, default 10).
  public var idleTimeoutSeconds: Int
  /// One whole request, body included (key `request_timeout_seconds`, default 300: a GET of
  /// a multi-GB blob over a slow link needs more).
  public var requestTimeoutSeconds: Int
  /// When to stop calling a bucket that does not answer (shared by every `s3` store on the
  /// same endpoint and bucket; the first one's settings count).
  public var circuitBreaker: CircuitBreakerConfig
  /// A PEM bundle of CAs to trust for an `https` endpoint with a private CA (MinIO, Ceph);
  /// absent: the system's trust store (key `ca_file`).
  public var caFile: String?
  /// Objects not written or read for this long are deleted by the sweep; absent: never.
  public var maxSeconds: Int64?
  public var sweepIntervalSeconds: Int64
  /// `compression`, `compression_level`: see `StoreCompression` (objects are zstd frames,
  /// marked by their `x-amz-meta-apus-encoding` metadata).
  public var compression: StoreCompression

  public init(from decoder: any Decoder) throws {
    let o = try ConfigObject(
      decoder,
      allowedKeys: StoreCompression.keys.union([
        "endpoint", "region", "bucket", "key_prefix", "path_style", "access_key_id",
        "secret_access_key", "session_token", "credentials", "multipart_threshold_bytes", "part_bytes",
        "max_attempts", "connect_timeout_seconds", "first_byte_timeout_seconds", "idle_timeout_seconds",
        "request_timeout_seconds", "circuit_breaker", "ca_file", "max_seconds", "sweep_interval_seconds",
      ]))
    endpoint = try o.requiredString("endpoint")
    guard endpoint.hasPrefix("http://") || endpoint.hasPrefix("https://") else {
      throw o.error("endpoint", "expected http(s)://host[:port], got \"\(endpoint)\"")
    }
    region = try o.string("region") ?? "us-east-1"
    bucket = try o.requiredString("bucket")
    guard !bucket.isEmpty, !bucket.contains("/") else { throw o.error("bucket", "expected a bucket name") }
    keyPrefix = try o.string("key_prefix") ?? ""
    pathStyle = try o.bool("path_style") ?? false
    accessKeyID = try o.string("access_key_id")
    secretAccessKey = try o.string("secret_access_key")
    sessionToken = try o.string("session_token")
    if accessKeyID != nil, secretAccessKey == nil {
      throw o.error("secret_access_key", "is required with access_key_id")
    }
    if secretAccessKey != nil, accessKeyID == nil {
      throw o.error("access_key_id", "is required with secret_access_key")
    }
    if sessionToken != nil, accessKeyID == nil {
      throw o.error("session_token", "is only used with access_key_id and secret_access_key")
    }
    let mode: S3CredentialsMode? = try o.choice("credentials")
    credentials = mode ?? (accessKeyID != nil ? .static : .auto)
    if credentials == .static, accessKeyID == nil {
      throw o.error("credentials", "static needs access_key_id and secret_access_key")
    }
    if credentials != .static, accessKeyID != nil {
      throw o.error(
        "credentials", "\(credentials.rawValue) reads keys from elsewhere: drop access_key_id and secret_access_key, or use static")
    }
    multipartThresholdBytes = try o.integer("multipart_threshold_bytes") ?? (8 << 20)
    partBytes = try o.integer("part_bytes") ?? (8 << 20)
    guard partBytes >= 5 << 20 else { throw o.error("part_bytes", "S3 parts are at least 5 MiB (5242880)") }
    maxAttempts = Int(try o.integer("max_attempts") ?? 4)
    connectTimeoutSeconds = Int(try o.integer("connect_timeout_seconds") ?? 2)
    firstByteTimeoutSeconds = Int(try o.integer("first_byte_timeout_seconds") ?? 10)
    idleTimeoutSeconds = Int(try o.integer("idle_timeout_seconds") ?? 10)
    requestTimeoutSeconds = Int(try o.integer("request_timeout_seconds") ?? 300)
    circuitBreaker = try o.decode(CircuitBreakerConfig.self, "circuit_breaker") ?? .init()
    caFile = try o.string("ca_file")
    maxSeconds = try o.integer("max_seconds")
    sweepIntervalSeconds = try o.integer("sweep_interval_seconds") ?? 3600
    compression = try StoreCompression(o)
  }
}
