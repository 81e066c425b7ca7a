import Synchronization

/// The actions one scheduler session is running, whether it is draining, and whether its
/// request stream has been closed; shared by the session's read loop and its action tasks.
final class RunningActions: Sendable {
  private struct State {
    /// Finishing an action's continuation kills the action.
    var running: [String: AsyncStream<Void>.Continuation] = [:]
    var draining = false
    var closed = false

    mutating func closeIfDrained() -> Bool {
      guard draining, running.isEmpty, !closed else { return false }
      closed = true
      return true
    }
  }
  private let state = Mutex(State())

  /// Starts tracking `name` and returns the stream that ends when it is killed; `nil` when
  /// draining, so the action is handed back.
  func admit(_ name: String) -> AsyncStream<Void>? {
    let (stream, continuation) = AsyncStream<Void>.makeStream()
    let admitted = state.withLock { s -> Bool in
      guard !s.draining else { return false }
      s.running[name] = continuation
      return true
    }
    return admitted ? stream : nil
  }

  /// Kills `name` if it is running.
  func kill(_ name: String) {
    state.withLock { $0.running[name] }?.finish()
  }

  /// Stops tracking `name`. True once: when a draining session's last action has ended and
  /// the request stream should be closed.
  func finish(_ name: String) -> Bool {
    state.withLock { s in
      s.running[name] = nil
      return s.closeIfDrained()
    }
  }

  /// Takes no more actions. True if nothing is running, so the stream can be closed now.
  func beginDraining() -> Bool {
    state.withLock { s in
      s.draining = true
      return s.closeIfDrained()
    }
  }
}
