import Synchronization

/// The server-wide bound on request bytes held in memory (received from peers, not yet
/// taken by a handler), shared by every connection of every listener in the process.
///
/// Connections do not fail requests when it is spent: they stop reading from their
/// sockets, largest holders first, so senders are throttled by TCP and HTTP/2 flow control.
/// A connection holding less than ``minimumShareBytes`` keeps reading, so small calls
/// always proceed.
public final class BufferBudget: Sendable {
  public let limitBytes: Int
  /// What each connection may hold even while the budget is spent.
  public let minimumShareBytes: Int
  private let held = Atomic<Int>(0)
  private let waiters = Mutex<[ObjectIdentifier: @Sendable () -> Void]>([:])
  private let hasWaiters = Atomic<Bool>(false)

  public init(limitBytes: Int, minimumShareBytes: Int = 256 * 1024) {
    self.limitBytes = limitBytes
    self.minimumShareBytes = minimumShareBytes
  }

  public var heldBytes: Int { held.load(ordering: .relaxed) }
  public var isSpent: Bool { heldBytes >= limitBytes }

  func add(_ n: Int) { held.add(n, ordering: .relaxed) }

  func release(_ n: Int) {
    let now = held.subtract(n, ordering: .relaxed).newValue
    if now < limitBytes { wakeWaiters() }
  }

  /// Calls `wake` once, off any lock, when held bytes next fall below the limit.
  func notifyWhenAvailable(_ owner: ObjectIdentifier, _ wake: @escaping @Sendable () -> Void) {
    waiters.withLock { w in
      w[owner] = wake
      hasWaiters.store(true, ordering: .relaxed)
    }
    // Released between the caller's check and the registration: wake now.
    if !isSpent { wakeWaiters() }
  }

  func cancelNotification(_ owner: ObjectIdentifier) {
    waiters.withLock { _ = $0.removeValue(forKey: owner) }
  }

  private func wakeWaiters() {
    guard hasWaiters.load(ordering: .relaxed) else { return }
    let wake = waiters.withLock { w -> [@Sendable () -> Void] in
      defer {
        w.removeAll()
        hasWaiters.store(false, ordering: .relaxed)
      }
      return Array(w.values)
    }
    for f in wake { f() }
  }
}

/// One connection's share of a ``BufferBudget``: its held bytes, updated on the event loop
/// as DATA arrives and from handler tasks as they take messages.
final class BufferAccount: Sendable {
  let budget: BufferBudget?
  private let held = Atomic<Int>(0)
  /// Set while the connection has stopped reading; a release then wakes it.
  private let readPaused = Atomic<Bool>(false)
  private let onRelease: @Sendable () -> Void

  init(budget: BufferBudget?, onRelease: @escaping @Sendable () -> Void) {
    self.budget = budget
    self.onRelease = onRelease
  }

  var heldBytes: Int { held.load(ordering: .relaxed) }

  func add(_ n: Int) {
    guard n > 0 else { return }
    held.add(n, ordering: .relaxed)
    budget?.add(n)
  }

  func release(_ n: Int) {
    guard n > 0 else { return }
    held.subtract(n, ordering: .relaxed)
    budget?.release(n)
    if readPaused.compareExchange(expected: true, desired: false, ordering: .relaxed).exchanged {
      onRelease()
    }
  }

  /// Event loop: the connection stopped reading and wants a call to `onRelease` when any of
  /// its bytes are released.
  func markPaused() { readPaused.store(true, ordering: .relaxed) }
}
