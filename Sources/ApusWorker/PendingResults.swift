import ApusProto

/// Results a worker owes its scheduler: those of actions that ended while no stream could
/// carry them (sent right after the next registration), and the last ones written, sent
/// again after a broken stream in case they were lost with it (the scheduler ignores a
/// result for an operation that is already complete). Bounded: past `limit`, the oldest
/// pending result is dropped and the scheduler runs that action again.
struct PendingResults: Sendable {
  let limit: Int
  /// How many sent results are kept for a resend, and for how long.
  let recentLimit: Int
  let recentWindow: Duration
  private(set) var pending: [ActionFinished] = []
  private var recent: [(finished: ActionFinished, at: ContinuousClock.Instant)] = []

  init(limit: Int = 10_000, recentLimit: Int = 256, recentWindow: Duration = .seconds(10)) {
    self.limit = limit
    self.recentLimit = recentLimit
    self.recentWindow = recentWindow
  }

  var isEmpty: Bool { pending.isEmpty }

  /// Operations whose result is owed (listed in the register message with the running ones).
  var names: [String] { pending.map(\.operationName) }

  /// Queues a result; returns the one dropped to stay within `limit`, if any.
  mutating func add(_ finished: ActionFinished) -> ActionFinished? {
    pending.append(finished)
    return pending.count > limit ? pending.removeFirst() : nil
  }

  /// Everything pending, in the order it came; the caller writes it and reports back with
  /// ``sent(_:at:)`` or ``restore(_:)``.
  mutating func take() -> [ActionFinished] {
    defer { pending = [] }
    return pending
  }

  /// Puts back results that could not be written, ahead of any that came meanwhile.
  mutating func restore(_ unsent: [ActionFinished]) {
    pending = unsent + pending
    if pending.count > limit { pending.removeFirst(pending.count - limit) }
  }

  /// Records a written result for a possible resend.
  mutating func sent(_ finished: ActionFinished, at now: ContinuousClock.Instant) {
    recent.append((finished, now))
    if recent.count > recentLimit { recent.removeFirst(recent.count - recentLimit) }
  }

  /// After a broken stream: results written within `recentWindow` before `now` are owed again.
  mutating func streamBroke(at now: ContinuousClock.Instant) {
    let again = recent.filter { now - $0.at <= recentWindow }.map(\.finished)
      .filter { f in !pending.contains { $0.operationName == f.operationName } }
    recent = []
    pending = again + pending
    if pending.count > limit { pending.removeFirst(pending.count - limit) }
  }

  /// The result held for `name` (pending or recently sent): a StartAction for an operation
  /// that already ended here is answered with it instead of running the action again. A
  /// killed copy's CANCELLED is no answer: the scheduler stopped it and now wants it run.
  func result(for name: String) -> ActionFinished? {
    let held = pending.last { $0.operationName == name } ?? recent.last { $0.finished.operationName == name }?.finished
    return held?.response?.status?.code == RPCStatusCode.cancelled.rawValue ? nil : held
  }
}
