import Synchronization

/// A one-way switch a worker's sessions wait on: once `trigger()`ed, `wait()` returns at once.
final class DrainSignal: Sendable {
  private struct State {
    var triggered = false
    var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
    var nextID = 0
  }
  private let state = Mutex(State())

  var isTriggered: Bool { state.withLock { $0.triggered } }

  /// Returns true the first time.
  @discardableResult
  func trigger() -> Bool {
    let (first, waiters) = state.withLock { s -> (Bool, [CheckedContinuation<Void, Never>]) in
      guard !s.triggered else { return (false, []) }
      s.triggered = true
      defer { s.waiters = [:] }
      return (true, Array(s.waiters.values))
    }
    for waiter in waiters { waiter.resume() }
    return first
  }

  /// Returns once triggered, or when the task is cancelled.
  func wait() async {
    let id = state.withLock { s in
      defer { s.nextID += 1 }
      return s.nextID
    }
    await withTaskCancellationHandler {
      await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
        let resumeNow = state.withLock { s -> Bool in
          if s.triggered || Task.isCancelled { return true }
          s.waiters[id] = c
          return false
        }
        if resumeNow { c.resume() }
      }
    } onCancel: {
      state.withLock { $0.waiters.removeValue(forKey: id) }?.resume()
    }
  }
}
