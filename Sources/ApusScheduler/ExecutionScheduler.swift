import ApusProto

/// What the Execution, Operations and WorkerAPI services need from a scheduler, whichever
/// way it keeps its state: `Scheduler` (in this process) or the PostgreSQL-backed
/// `SharedScheduler` (ApusSchedulerPostgres). Calls that may reach a database are `async`
/// and throw `SchedulerError` (UNAVAILABLE while it does not answer).
public protocol ExecutionScheduler: Actor {
  nonisolated var name: String { get }
  /// How often workers must ping; fixed by the config, so readable before registering.
  nonisolated var keepAliveSeconds: Int { get }
  /// Why the scheduler cannot work now (its database does not answer); nil while it can.
  nonisolated var unavailableReason: String? { get }
  nonisolated func effectiveTimeout(_ action: Action) throws(SchedulerError) -> Duration

  func submit(_ job: ExecutionJob) async throws(SchedulerError) -> String
  func recordCompleted(_ job: ExecutionJob, _ response: ExecuteResponse) async throws(SchedulerError) -> Operation
  func watch(_ name: String) async throws(SchedulerError) -> AsyncStream<Operation>?
  /// A watch its caller ends with `unsubscribe` when it stops reading.
  func subscribe(_ name: String) async throws(SchedulerError) -> Scheduler.Subscription?
  func unsubscribe(_ name: String, _ id: Int) async
  func instanceName(ofOperation name: String) async throws(SchedulerError) -> String?
  func operation(_ name: String) async throws(SchedulerError) -> Operation?
  func cancel(_ name: String) async throws(SchedulerError) -> Bool
  /// One page of an instance's operations in creation order after the page token `after`;
  /// the next token, nil after the last page.
  func listOperations(instance: String, pageSize: Int, after: UInt64?) async throws(SchedulerError) -> (
    operations: [Operation], next: UInt64?
  )
  /// Forgets a finished operation (NOT_FOUND if unknown, FAILED_PRECONDITION if unfinished).
  func deleteOperation(_ name: String) async throws(SchedulerError)

  /// `session` names this registration (one per WorkerAPI stream), so the end of a stale
  /// stream cannot remove the registration that replaced it.
  func registerWorker(
    id: String, properties: [Platform.Property], capacity: Int, runningOperations: [String],
    session: UInt64, send: @escaping @Sendable (SchedulerMessage) -> Void
  ) async throws(SchedulerError)
  func keepAlive(_ id: String) async
  func drain(_ id: String) async
  func finished(_ id: String, _ message: ActionFinished) async
  /// The worker's stream ended (`session`: only if it is still the registration in force)
  /// or it stopped answering (`nil`).
  func workerGone(_ id: String, session: UInt64?) async
  func snapshot() async -> SchedulerSnapshot
  /// Once a second: evicts silent workers (and, in memory, does all the timed upkeep).
  func tick() async
}

extension Scheduler.Subscription {
  /// For other backends (the memberwise one is internal).
  public init(_ stream: AsyncStream<Operation>, id: Int) {
    self.stream = stream
    self.id = id
  }
}

extension Scheduler: ExecutionScheduler {
  /// Never: its state is in this process.
  public nonisolated var unavailableReason: String? { nil }
}
