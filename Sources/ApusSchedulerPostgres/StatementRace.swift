import Synchronization

/// The first outcome of a database step: its result, its timeout, or its caller's
/// cancellation, whichever comes first; later ones are ignored.
///
/// It lets a caller stop waiting for a statement that never ends: postgres-nio can leave a
/// query's future unfulfilled (a query written to a connection that was closing as
/// PostgreSQL went away), and waiting for it held a worker's stream or a scheduler loop
/// forever after the database was back.
final class StatementRace<T: Sendable>: Sendable {
  private struct State {
    var waiter: CheckedContinuation<T, any Error>?
    var outcome: Result<T, any Error>?
  }
  private let state = Mutex(State())

  /// Waits for the first outcome (at once if there is one already).
  func wait() async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
      let ready = state.withLock { s -> Result<T, any Error>? in
        if let outcome = s.outcome { return outcome }
        s.waiter = continuation
        return nil
      }
      if let ready { continuation.resume(with: ready) }
    }
  }

  /// Records `outcome` unless another came first.
  func finish(_ outcome: Result<T, any Error>) {
    let waiter = state.withLock { s -> CheckedContinuation<T, any Error>? in
      guard s.outcome == nil else { return nil }
      s.outcome = outcome
      defer { s.waiter = nil }
      return s.waiter
    }
    waiter?.resume(with: outcome)
  }
}
