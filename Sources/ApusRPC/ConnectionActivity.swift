import Synchronization

/// Counts open connections and calls across the server, so shutdown can wait for them.
final class ConnectionActivity: Sendable {
  private struct State {
    var streams = 0
    var idleWaiters: [Int: CheckedContinuation<Void, Never>] = [:]
    var nextWaiter = 0
  }
  private let state = Mutex(State())

  func streamOpened() { state.withLock { $0.streams += 1 } }

  func streamClosed() {
    let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
      s.streams -= 1
      guard s.streams == 0 else { return [] }
      defer { s.idleWaiters = [:] }
      return Array(s.idleWaiters.values)
    }
    for w in waiters { w.resume() }
  }

  var openStreams: Int { state.withLock { $0.streams } }

  /// Returns when no call is open, or when the task is cancelled (shutdown's grace ran out
  /// while a long-lived call, such as a remote worker's stream, was still open).
  func waitUntilIdle() async {
    let id = state.withLock { s in
      defer { s.nextWaiter += 1 }
      return s.nextWaiter
    }
    await withTaskCancellationHandler {
      await withCheckedContinuation { c in
        let now = state.withLock { s -> Bool in
          if s.streams == 0 || Task.isCancelled { return true }
          s.idleWaiters[id] = c
          return false
        }
        if now { c.resume() }
      }
    } onCancel: {
      state.withLock { $0.idleWaiters.removeValue(forKey: id) }?.resume()
    }
  }
}
