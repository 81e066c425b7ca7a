import Synchronization

/// The actions a worker is running, across its scheduler sessions (a broken stream does not
/// stop them), and whether it still takes new ones.
final class RunningActions: Sendable {
  private struct State {
    /// Finishing an action's continuation kills the action.
    var running: [String: AsyncStream<Void>.Continuation] = [:]
    /// No new actions are taken.
    var draining = false
  }
  private let state = Mutex(State())

  enum Admission {
    /// Run it; the stream ends when the scheduler kills it.
    case start(AsyncStream<Void>)
    /// It is running here already (sent again after a reconnect): its result will follow.
    case alreadyRunning
    /// Draining: hand it back.
    case refused
  }

  /// Actions running now.
  var count: Int { state.withLock { $0.running.count } }

  /// Their operation names (listed when registering again).
  var names: [String] { state.withLock { Array($0.running.keys) } }

  var isDraining: Bool { state.withLock { $0.draining } }

  /// Starts tracking `name` unless it runs already or the worker is draining.
  func admit(_ name: String) -> Admission {
    let (stream, continuation) = AsyncStream<Void>.makeStream()
    let admission = state.withLock { s -> Admission in
      if s.running[name] != nil { return .alreadyRunning }
      guard !s.draining else { return .refused }
      s.running[name] = continuation
      return .start(stream)
    }
    if case .start = admission { return admission }
    continuation.finish()
    return admission
  }

  /// Kills `name` if it is running.
  func kill(_ name: String) {
    state.withLock { $0.running[name] }?.finish()
  }

  /// Stops tracking `name`.
  func finish(_ name: String) {
    state.withLock { _ = $0.running.removeValue(forKey: name) }
  }

  /// Takes no more actions.
  func beginDraining() {
    state.withLock { $0.draining = true }
  }
}
