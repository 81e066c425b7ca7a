import ApusConfig
import ApusProto

extension SchedulerConfig {
  /// The timeout a worker enforces for `action`: its own, or the default when it sets none;
  /// INVALID_ARGUMENT above `max_timeout_seconds`. Shared by both scheduler backends.
  public func effectiveTimeout(_ action: Action) throws(SchedulerError) -> Duration {
    guard let t = action.timeout, t.seconds > 0 || t.nanos > 0 else {
      return .seconds(defaultTimeoutSeconds)
    }
    let requested = Duration.seconds(t.seconds) + .nanoseconds(Int64(t.nanos))
    guard requested <= .seconds(maxTimeoutSeconds) else {
      throw SchedulerError(
        .invalidArgument,
        "action timeout \(t.seconds)s exceeds this scheduler's maximum of \(maxTimeoutSeconds)s")
    }
    return requested
  }
}
