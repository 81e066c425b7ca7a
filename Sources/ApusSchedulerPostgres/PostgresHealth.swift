import Synchronization

/// Whether the scheduler's database answered lately: the readiness source for `/readyz`.
///
/// Every statement reports its outcome here; the sweeper's ping does too while the process
/// is idle, so an outage is seen within a second even with no traffic.
public final class PostgresHealth: Sendable {
  private let state = Mutex<String?>(nil)
  /// `host:port/database`, as messages name it.
  public let database: String

  public init(database: String) {
    self.database = database
  }

  /// Nil while the database answers; otherwise why the last attempt failed.
  public var unavailableReason: String? { state.withLock { $0 } }

  /// Returns true if this ends an outage.
  @discardableResult
  func succeeded() -> Bool {
    state.withLock { reason in
      defer { reason = nil }
      return reason != nil
    }
  }

  /// Returns true if this starts an outage.
  @discardableResult
  func failed(_ reason: String) -> Bool {
    state.withLock { current in
      defer { current = reason }
      return current == nil
    }
  }
}
