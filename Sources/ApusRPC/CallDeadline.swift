import NIOCore

/// The deadline of the call the current task serves: the client's `grpc-timeout`, or the
/// listener's default for calls that send none.
///
/// The server sets it around each handler, so everything the handler starts (store
/// operations, S3 requests, outgoing gRPC calls) can stop retrying or waiting once nobody
/// waits for the answer. `GRPCClient` sends what is left of it as the `grpc-timeout` of calls
/// made without an explicit timeout.
public enum CallDeadline {
  /// On NIO's monotonic clock, the one the server reads anyway (a `ContinuousClock.Instant`
  /// would give every struct holding it a layout known only at run time).
  @TaskLocal public static var current: NIODeadline?

  /// Time left before the current deadline; nil when there is none.
  public static var remaining: Duration? { current.map { Duration($0 - .now()) } }

  /// The earlier of `timeout` from now and the current deadline.
  public static func bounded(_ timeout: Duration?) -> Duration? {
    switch (timeout, remaining) {
    case (let t?, let r?): return min(t, r)
    case (let t, let r): return t ?? r
    }
  }
}
