import NIOCore

/// A token bucket: up to `burst` events at once, then `perSecond` on average.
struct TokenBucket: Sendable {
  let burst: Double
  let perSecond: Double
  private var tokens: Double
  private var last: NIODeadline?

  init(burst: Int, perSecond: Int) {
    self.burst = Double(burst)
    self.perSecond = Double(perSecond)
    tokens = Double(burst)
  }

  /// Takes a token if there is one.
  mutating func take(now: NIODeadline) -> Bool {
    if let last, now > last {
      tokens = min(burst, tokens + Double((now - last).nanoseconds) / 1e9 * perSecond)
    }
    last = now
    guard tokens >= 1 else { return false }
    tokens -= 1
    return true
  }
}
