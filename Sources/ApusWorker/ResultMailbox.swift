import ApusProto
import Synchronization

/// ``PendingResults`` shared by a worker's action tasks (which post results) and its current
/// session (which waits for them and writes them to the scheduler). One waiter at a time:
/// sessions follow one another.
final class ResultMailbox: Sendable {
  private struct State {
    var results: PendingResults
    var waiter: CheckedContinuation<Void, Never>?
    var poked = false
  }
  private let state: Mutex<State>

  init(_ results: PendingResults = PendingResults()) {
    state = Mutex(State(results: results))
  }

  var isEmpty: Bool { state.withLock { $0.results.isEmpty } }
  var names: [String] { state.withLock { $0.results.names } }

  /// Queues a result and wakes the session; returns a result dropped to stay bounded.
  func post(_ finished: ActionFinished) -> ActionFinished? {
    let (dropped, waiter) = state.withLock { s in
      let dropped = s.results.add(finished)
      defer { s.waiter = nil }
      return (dropped, s.waiter)
    }
    waiter?.resume()
    return dropped
  }

  /// Wakes the session without a result (it checks whether it may close).
  func poke() {
    let waiter = state.withLock { s in
      s.poked = true
      defer { s.waiter = nil }
      return s.waiter
    }
    waiter?.resume()
  }

  /// Waits until a result is pending or ``poke()`` was called, then takes what is pending
  /// (possibly nothing). Returns at once, empty, if the task is cancelled.
  func next() async -> [ActionFinished] {
    await withTaskCancellationHandler {
      await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
        let now = state.withLock { s -> Bool in
          if !s.results.isEmpty || s.poked || Task.isCancelled { return true }
          s.waiter = c
          return false
        }
        if now { c.resume() }
      }
    } onCancel: {
      state.withLock { s in
        defer { s.waiter = nil }
        return s.waiter
      }?.resume()
    }
    return state.withLock { s in
      s.poked = false
      return Task.isCancelled ? [] : s.results.take()
    }
  }

  func restore(_ unsent: [ActionFinished]) { state.withLock { $0.results.restore(unsent) } }
  func sent(_ finished: ActionFinished) { state.withLock { $0.results.sent(finished, at: .now) } }
  func streamBroke() { state.withLock { $0.results.streamBroke(at: .now) } }
  func result(for name: String) -> ActionFinished? { state.withLock { $0.results.result(for: name) } }
}
