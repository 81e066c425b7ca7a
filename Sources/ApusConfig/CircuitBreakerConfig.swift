/// `circuit_breaker` of a remote store (`s3`, `grpc`): when to stop calling a backend that
/// is down, and when to try it again.
///
/// - `failure_threshold` (5): consecutive failed requests (connection errors, timeouts,
///   5xx) that open the breaker. While open, calls fail at once with UNAVAILABLE.
/// - `open_seconds` (10): how long it stays open; then one request goes through as a probe,
///   and its success closes the breaker (its failure opens it again).
public struct CircuitBreakerConfig: Sendable, Equatable, Decodable {
  public var failureThreshold: Int = 5
  public var openSeconds: Int = 10

  public init() {}

  public init(from decoder: any Decoder) throws {
    let o = try ConfigObject(decoder, allowedKeys: ["failure_threshold", "open_seconds"])
    let d = Self()
    failureThreshold = Int(try o.integer("failure_threshold") ?? Int64(d.failureThreshold))
    openSeconds = Int(try o.integer("open_seconds") ?? Int64(d.openSeconds))
  }
}
