/// How long a worker waits before its next attempt to reach a scheduler: exponential from
/// `initial` up to `cap`, each delay drawn from its upper half (jitter, so a fleet that lost
/// its scheduler at once does not come back in step). Reset after a registration.
struct ReconnectBackoff: Sendable {
  let initial: Duration
  let cap: Duration
  private var ceiling: Duration

  init(initial: Duration = .milliseconds(100), cap: Duration = .seconds(5)) {
    self.initial = initial
    self.cap = cap
    ceiling = initial
  }

  /// The next delay, between half the current ceiling and the ceiling; doubles the ceiling.
  mutating func next<R: RandomNumberGenerator>(using random: inout R) -> Duration {
    let upper = ceiling
    ceiling = min(ceiling * 2, cap)
    let upperNanos = Self.nanoseconds(upper)
    let half = upperNanos / 2
    return .nanoseconds(half + Int64.random(in: 0...(upperNanos - half), using: &random))
  }

  mutating func next() -> Duration {
    var random = SystemRandomNumberGenerator()
    return next(using: &random)
  }

  /// After a successful registration: the next failure starts from `initial` again.
  mutating func reset() { ceiling = initial }

  /// The delay ceiling now: below a second, retries are routine and logged at debug level.
  var isEarly: Bool { ceiling <= .seconds(1) }

  static func nanoseconds(_ d: Duration) -> Int64 {
    d.components.seconds * 1_000_000_000 + d.components.attoseconds / 1_000_000_000
  }
}
