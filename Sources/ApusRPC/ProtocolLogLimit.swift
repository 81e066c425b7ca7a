import NIOCore
import Synchronization

/// Bounds the protocol-problem lines all connections together write (GOAWAY for a protocol
/// error or flood, RST_STREAM, stalled uploads), so a flood of bad clients cannot flood the
/// log: a burst of 20 lines, then 2 a second; the next line written says how many were
/// left out.
final class ProtocolLogLimit: Sendable {
  static let shared = ProtocolLogLimit()

  private struct State {
    var bucket: TokenBucket
    var skipped = 0
  }

  private let state: Mutex<State>

  init(burst: Int = 20, perSecond: Int = 2) {
    state = Mutex(State(bucket: TokenBucket(burst: burst, perSecond: perSecond)))
  }

  /// nil: leave this line out; else how many lines were left out since the last one.
  func admit(now: NIODeadline = .now()) -> Int? {
    state.withLock { s in
      guard s.bucket.take(now: now) else {
        s.skipped += 1
        return nil
      }
      defer { s.skipped = 0 }
      return s.skipped
    }
  }
}
