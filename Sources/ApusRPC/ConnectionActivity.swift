import Synchronization

/// Counts open connections and calls across the server, so shutdown can wait for them.
final class ConnectionActivity: Sendable {
  private struct State {
    var streams = 0
    var idleWaiters: [CheckedContinuation<Void, Never>] = []
  }
  private let state = Mutex(State())

  func streamOpened() { state.withLock { $0.streams += 1 } }

  func streamClosed() {
    let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
      s.streams -= 1
      guard s.streams == 0 else { return [] }
      defer { s.idleWaiters = [] }
      return s.idleWaiters
    }
    for w in waiters { w.resume() }
  }

  var openStreams: Int { state.withLock { $0.streams } }

  /// Returns when no call is open.
  func waitUntilIdle() async {
    await withCheckedContinuation { c in
      let idle = state.withLock { s -> Bool in
        if s.streams == 0 { return true }
        s.idleWaiters.append(c)
        return false
      }
      if idle { c.resume() }
    }
  }
}
