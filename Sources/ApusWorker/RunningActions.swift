import Synchronization

/// The actions one scheduler session is running, whether it is draining, and whether its
/// request stream has been closed; shared by the session's read loop and its action tasks.
final class RunningActions: Sendable {
  private struct State {
    /// Finishing an action's continuation kills the action.
    var running: [String: AsyncStream<Void>.Continuation] = [:]
    /// No new actions are taken.
    var draining = false
    /// The request stream is to be closed once nothing runs (graceful shutdown; a `drain()`
    /// alone keeps the session open).
    var closing = false
    var closed = false

    mutating func closeIfDrained() -> Bool {
      guard closing, running.isEmpty, !closed else { return false }
      closed = true
      return true
    }
  }
  private let state = Mutex(State())

  /// Actions running now.
  var count: Int { state.withLock { $0.running.count } }

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

  /// Stops tracking `name`. True once: when a closing session's last action has ended and
  /// the request stream should be closed.
  func finish(_ name: String) -> Bool {
    state.withLock { s in
      s.running[name] = nil
      return s.closeIfDrained()
    }
  }

  /// Takes no more actions; with `close`, the stream is to be closed once nothing runs.
  /// True if that is now, so the caller closes it.
  func beginDraining(close: Bool = true) -> Bool {
    state.withLock { s in
      s.draining = true
      if close { s.closing = true }
      return s.closeIfDrained()
    }
  }
}
