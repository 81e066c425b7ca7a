/// `servers[].limits`: what one listener's clients may hold open or make it buffer, and when
/// dead or stalled connections and calls are closed. Times are whole seconds; 0 turns a
/// timeout off where noted.
public struct ConnectionLimitsConfig: Sendable, Equatable, Decodable {
  /// Open connections; at the cap, one that has not sent its HTTP/2 preface is dropped for
  /// a new one, otherwise the new one is refused.
  public var maxConnections: Int = 10_000
  /// SETTINGS_MAX_CONCURRENT_STREAMS. Bazel holds an Execute/WaitExecution stream open per
  /// remote action in flight, so this bounds `--jobs` per connection.
  public var maxConcurrentStreams: Int = 1000
  /// Request bytes one connection may hold before it is no longer read.
  public var maxBufferedBytesPerConnection: Int = 32 * 1024 * 1024
  /// Time to send the HTTP/2 preface after connecting.
  public var handshakeTimeoutSeconds: Int = 10
  /// A connection with no call open this long is closed with GOAWAY (0: never).
  public var idleTimeoutSeconds: Int = 300
  /// With calls open and nothing received this long, the server sends a PING (0: never)…
  public var keepaliveIntervalSeconds: Int = 60
  /// …and closes the connection if nothing arrives within this time.
  public var keepaliveTimeoutSeconds: Int = 20
  /// A call whose request body is still open and sends nothing this long is cancelled,
  /// its temp files removed (0: never).
  public var uploadIdleTimeoutSeconds: Int = 60
  /// The deadline of a call whose client sends no `grpc-timeout`, bounding the store work it
  /// starts; Execute, WaitExecution, WaitOperation and the worker stream are exempt, as they
  /// last as long as the action. Absent: none (Bazel sends `--remote_timeout` on each call).
  public var defaultDeadlineSeconds: Int?

  static let keys: Set<String> = [
    "max_connections", "max_concurrent_streams", "max_buffered_bytes_per_connection",
    "handshake_timeout_seconds", "idle_timeout_seconds", "keepalive_interval_seconds",
    "keepalive_timeout_seconds", "upload_idle_timeout_seconds", "default_deadline_seconds",
  ]

  public init() {}

  public init(from decoder: any Decoder) throws {
    let o = try ConfigObject(decoder, allowedKeys: Self.keys)
    let d = Self()
    func int(_ key: String, _ fallback: Int, positive: Bool = true) throws -> Int {
      Int(try o.integer(key, positive: positive) ?? Int64(fallback))
    }
    maxConnections = try int("max_connections", d.maxConnections)
    maxConcurrentStreams = try int("max_concurrent_streams", d.maxConcurrentStreams)
    guard maxConcurrentStreams <= 1 << 20 else {
      throw o.error("max_concurrent_streams", "expected at most 1048576, got \(maxConcurrentStreams)")
    }
    maxBufferedBytesPerConnection = try int(
      "max_buffered_bytes_per_connection", d.maxBufferedBytesPerConnection)
    guard maxBufferedBytesPerConnection >= 1 << 20 else {
      throw o.error(
        "max_buffered_bytes_per_connection",
        "expected at least 1048576 (one stream window), got \(maxBufferedBytesPerConnection)")
    }
    handshakeTimeoutSeconds = try int("handshake_timeout_seconds", d.handshakeTimeoutSeconds)
    idleTimeoutSeconds = try int("idle_timeout_seconds", d.idleTimeoutSeconds, positive: false)
    keepaliveIntervalSeconds = try int(
      "keepalive_interval_seconds", d.keepaliveIntervalSeconds, positive: false)
    keepaliveTimeoutSeconds = try int("keepalive_timeout_seconds", d.keepaliveTimeoutSeconds)
    uploadIdleTimeoutSeconds = try int(
      "upload_idle_timeout_seconds", d.uploadIdleTimeoutSeconds, positive: false)
    defaultDeadlineSeconds = try o.integer("default_deadline_seconds").map { Int($0) }
  }
}
