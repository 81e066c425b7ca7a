import ApusConfig
import ApusProto
import ApusScheduler
import Logging

/// The scheduler of `state: {"postgres": …}`: operations, queue and worker leases live in
/// PostgreSQL, so any number of processes with the same config serve the same instances.
///
/// Each process keeps only what is local to it: the workers connected to it (their send
/// closures, free slots and reservations) and the watchers of its clients. Dispatch claims
/// queued actions from the shared queue for its own free workers; other processes learn of
/// changes through `LISTEN/NOTIFY`, with polling as the fallback. Every answer to a client
/// is committed first, so a client never hears of an operation the database does not hold.
public actor SharedScheduler {
  public nonisolated let name: String
  public nonisolated let config: SchedulerConfig
  public nonisolated let store: PostgresSchedulerStore
  public nonisolated var keepAliveSeconds: Int { config.keepAliveSeconds }
  let rules: [String: SchedulerConfig.PropertyRule]
  let matcher: PlatformMatcher
  let logger: Logger
  let metrics: SchedulerMetrics

  struct LocalWorker {
    let id: String
    /// Which WorkerAPI stream registered it (see `workerGone(_:session:)`).
    let session: UInt64
    var properties: [String: [String]]
    var capacity: Int
    /// Operation name → its platform key, for reservations.
    var running: [String: PlatformKey] = [:]
    var reserved: [String: Double] = [:]
    var lastSeen: ContinuousClock.Instant
    var draining = false
    /// Slots held for Executes being inserted straight onto this worker (`submit`).
    var claiming = 0
    let send: @Sendable (SchedulerMessage) -> Void

    var freeSlots: Int { draining ? 0 : max(0, capacity - running.count - claiming) }
  }

  struct Watcher {
    var continuations: [Int: AsyncStream<Operation>.Continuation] = [:]
    var lastStage: ExecutionStage?
  }

  var workers: [String: LocalWorker] = [:]
  /// Operation name → the local worker running it.
  var runningOn: [String: String] = [:]
  var watchers: [String: Watcher] = [:]
  var nextWatcher = 0
  /// Every platform key work was queued under (refreshed by polling; grown by submits).
  var keys: Set<PlatformKey> = []
  /// Watched or locally running operations that changed and must be read again.
  var dirty: Set<String> = []
  /// Results the database could not take yet; retried by the sweeper, so none is lost.
  var pendingResults: [(name: String, worker: String, response: ExecuteResponse)] = []
  /// Operations told to stop on a local worker: the CANCELLED result that follows is not
  /// the action's.
  var killed: Set<String> = []
  /// Counts local assignments, so a refresh never acts on a read older than an assignment.
  var assignments: UInt64 = 0
  /// When each locally running operation was assigned (a value of `assignments`).
  var assignedAt: [String: UInt64] = [:]
  /// When each locally running operation was handed to its worker, for the execution time.
  var startedAt: [String: ContinuousClock.Instant] = [:]
  /// Queued actions per instance as last counted (each poll), for `max_queued_actions`:
  /// approximate across processes, by at most what was queued since the count.
  var queuedPerInstance: [String: Int] = [:]
  /// Since when no live worker (of any process) could run a queued platform key.
  var unsatisfiableSince: [String: ContinuousClock.Instant] = [:]
  var dispatching = false
  var dispatchAgain = false
  /// Operations this process just created, as committed, until their first subscribe: the
  /// Execute that follows needs no read. Dropped when a notification names one (it changed)
  /// and on resubscription (notifications may have been lost).
  var fresh: [String: StoredOperation] = [:]
  /// Names of operations being inserted; `note` removes one a notification names (another
  /// process changed it before the insert returned here), so it is not taken as fresh.
  var inserting: Set<String> = []
  /// Operations this process claimed whose claim's own notification has not arrived yet: it
  /// tells nothing new, so it is not read again (see `note`). Cleared on resubscription.
  var ownClaims: Set<String> = []

  let dispatchWake: AsyncStream<Void>.Continuation
  let dispatchSignals: AsyncStream<Void>
  let refreshWake: AsyncStream<Void>.Continuation
  let refreshSignals: AsyncStream<Void>

  public init(name: String, config: SchedulerConfig, postgres: PostgresStateConfig, logger: Logger) throws {
    self.name = name
    self.config = config
    self.rules = config.platformProperties
    self.matcher = PlatformMatcher(rules: config.platformProperties)
    self.logger = logger
    self.metrics = SchedulerMetrics(scheduler: name)
    self.store = try PostgresSchedulerStore(
      scheduler: name, config: postgres, maxJobRetries: config.maxJobRetries, logger: logger)
    (dispatchSignals, dispatchWake) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
    (refreshSignals, refreshWake) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
  }

  /// Why the database cannot be used now; nil while it answers (`/readyz`).
  public nonisolated var unavailableReason: String? { store.health.unavailableReason }

  // MARK: - Clients

  /// The timeout a worker enforces for `action`, or an error if it asks for too much.
  public nonisolated func effectiveTimeout(_ action: Action) throws(SchedulerError) -> Duration {
    try config.effectiveTimeout(action)
  }

  /// Queues `job` in the database, or joins the identical one in flight on any process.
  /// Returns once committed.
  public func submit(_ job: ExecutionJob) async throws(SchedulerError) -> String {
    try matcher.validate(job.platform)
    let timeout = try effectiveTimeout(job.action)
    guard queuedPerInstance[job.instanceName, default: 0] < config.maxQueuedActions else {
      metrics.rejectedQueueFull.increment()
      throw SchedulerError(
        .resourceExhausted,
        "\(config.maxQueuedActions) actions are queued for instance \"\(job.instanceName)\", the scheduler's max_queued_actions; retry later")
    }
    let key = PlatformKey(job.platform, rules: rules)
    let seconds = timeout.components.seconds + (timeout.components.attoseconds > 0 ? 1 : 0)
    // A free local worker takes it at once (its slot held across the insert); keys with a
    // `minimum` property go through the queue, where reservations are counted.
    let target = key.reserves(rules) ? nil : freeWorker(for: key)
    let ahead = target.map { worker in
      keys.filter { $0.isSatisfied(by: worker.properties, reserved: worker.reserved, rules: rules) }
    }
    if let target { workers[target.id]?.claiming += 1 }
    let planned = PostgresSchedulerStore.newName()
    inserting.insert(planned)
    if fresh.count > 10_000 { fresh = [:] }  // Executes whose client left before subscribing
    let submitted: PostgresSchedulerStore.Submitted
    do throws(SchedulerError) {
      submitted = try await store.submit(
        job, name: planned, key: key, timeoutSeconds: seconds, registerKey: !keys.contains(key),
        directTo: target?.id, ahead: ahead.map(Array.init) ?? [])
    } catch {
      if let target { workers[target.id]?.claiming -= 1 }
      inserting.remove(planned)
      throw error
    }
    if let target { workers[target.id]?.claiming -= 1 }
    let name = submitted.name
    let unchanged = inserting.remove(planned) != nil
    let added = keys.insert(key).inserted
    if submitted.direct, let target {
      var start = PostgresSchedulerStore.startAction(job, timeoutSeconds: seconds)
      start.operationName = name
      let action = ClaimedAction(
        start: start, worker: target.id, platform: job.platform, platformKey: key.rawValue, queueWait: .zero, attempts: 0)
      if assign(action, to: target.id, notified: false) {
        if unchanged {
          fresh[name] = StoredOperation(
            name: name, instanceName: job.instanceName, actionDigest: job.actionDigest, stage: .executing,
            response: nil, worker: target.id)
        }
      } else {
        // The worker left during the insert: the action goes back to the queue unrun.
        _ = try? await store.handBack(name, worker: target.id)
        dispatchWake.yield()
      }
      return name
    }
    if !submitted.merged {
      queuedPerInstance[job.instanceName, default: 0] += 1
      if unchanged {
        fresh[name] = StoredOperation(
          name: name, instanceName: job.instanceName, actionDigest: job.actionDigest, stage: .queued, response: nil,
          worker: nil)
      }
    }
    if added || workers.values.contains(where: { $0.freeSlots > 0 }) {
      dispatchWake.yield()
    }
    return name
  }

  /// The least-loaded local worker with a free slot that can run `key` (the first idle one).
  private func freeWorker(for key: PlatformKey) -> LocalWorker? {
    var best: LocalWorker?
    for worker in workers.values where worker.freeSlots > 0 && (best.map { worker.running.count < $0.running.count } ?? true) {
      guard key.isSatisfied(by: worker.properties, reserved: worker.reserved, rules: rules) else { continue }
      best = worker
      if worker.running.isEmpty && worker.claiming == 0 { break }
    }
    return best
  }

  /// Records an operation answered from the action cache, so any process can look it up.
  public func recordCompleted(_ job: ExecutionJob, _ response: ExecuteResponse) async throws(SchedulerError) -> Operation {
    let name = try await store.recordCompleted(job, key: PlatformKey(job.platform, rules: rules), response)
    return StoredOperation(
      name: name, instanceName: job.instanceName, actionDigest: job.actionDigest, stage: .completed,
      response: response, worker: nil
    ).operation
  }

  /// Current state, then every change until done; nil if unknown or expired.
  public func watch(_ name: String) async throws(SchedulerError) -> AsyncStream<Operation>? {
    try await subscribe(name)?.stream
  }

  /// Ends a watch whose reader went away.
  public func unsubscribe(_ name: String, _ id: Int) {
    drop(watcher: id, of: name)
  }

  /// A watch its caller ends with `unsubscribe`; nil if unknown or expired.
  public func subscribe(_ name: String) async throws(SchedulerError) -> Scheduler.Subscription? {
    // Registered before the read, so a change committed meanwhile is not missed: it marks
    // the operation dirty and is read again.
    let (stream, continuation) = AsyncStream<Operation>.makeStream()
    nextWatcher += 1
    let id = nextWatcher
    watchers[name, default: Watcher()].continuations[id] = continuation
    let found: StoredOperation?
    if let created = fresh.removeValue(forKey: name) {
      found = created  // committed by this process, and no change notified since
    } else {
      do {
        found = try await store.operation(name)
      } catch {
        drop(watcher: id, of: name)
        throw error
      }
    }
    guard let found else {
      drop(watcher: id, of: name)
      return nil
    }
    continuation.yield(found.operation)
    if found.response != nil {
      drop(watcher: id, of: name)
    } else if watchers[name]?.lastStage == nil {
      watchers[name]?.lastStage = found.stage
    }
    return Scheduler.Subscription(stream, id: id)
  }

  public func operation(_ name: String) async throws(SchedulerError) -> Operation? {
    try await store.operation(name)?.operation
  }

  public func instanceName(ofOperation name: String) async throws(SchedulerError) -> String? {
    try await store.operation(name)?.instanceName
  }

  /// One page of an instance's operations in creation order, after the page token `after`.
  public func listOperations(instance: String, pageSize: Int, after: UInt64?) async throws(SchedulerError) -> (
    operations: [Operation], next: UInt64?
  ) {
    let page = try await store.list(instance: instance, pageSize: pageSize, after: after)
    return (page.operations.map(\.operation), page.next)
  }

  /// Forgets a finished operation; an unfinished one is FAILED_PRECONDITION.
  public func deleteOperation(_ name: String) async throws(SchedulerError) {
    try await store.delete(name)
  }

  /// Cancels a queued or running operation; false if unknown. The worker running it is told
  /// to stop by the process it is connected to.
  public func cancel(_ name: String) async throws(SchedulerError) -> Bool {
    let (found, worker) = try await store.cancel(name)
    if let worker, runningOn[name] == worker { stop(name, reason: "cancelled") }
    return found
  }

  // MARK: - Workers

  /// Takes the worker's lease (from any process that held it) and may hand it work. Of the
  /// actions the database has assigned to it, those it lists in `runningOperations` stay
  /// its own; the others are queued again at once.
  public func registerWorker(
    id: String, properties: [Platform.Property], capacity: Int, runningOperations: [String] = [],
    session: UInt64 = 0, send: @escaping @Sendable (SchedulerMessage) -> Void
  ) async throws(SchedulerError) {
    guard workers[id] == nil else {
      throw SchedulerError(.alreadyExists, "a worker named \"\(id)\" is already connected")
    }
    try await store.registerWorker(id, properties: properties)
    let kept = try await store.adoptRunning(worker: id, listed: runningOperations)
    guard workers[id] == nil else {
      throw SchedulerError(.alreadyExists, "a worker named \"\(id)\" is already connected")
    }
    var props: [String: [String]] = [:]
    for p in properties { props[p.name, default: []].append(p.value) }
    var worker = LocalWorker(
      id: id, session: session, properties: props, capacity: max(1, capacity), lastSeen: .now, send: send)
    for (operation, rawKey) in kept {
      let key = keys.first { $0.rawValue == rawKey } ?? PlatformKey(Self.properties(rawKey), rules: rules)
      worker.running[operation] = key
      for (k, v) in key.reservations(rules) { worker.reserved[k, default: 0] += v }
      runningOn[operation] = id
    }
    workers[id] = worker
    logger.info(
      "worker registered",
      metadata: ["worker": "\(id)", "capacity": "\(capacity)", "properties": "\(props)", "kept": "\(kept.count)"])
    dispatchWake.yield()
  }

  public func keepAlive(_ id: String) {
    workers[id]?.lastSeen = .now
  }

  /// The worker takes no more actions.
  public func drain(_ id: String) {
    workers[id]?.draining = true
  }

  /// A worker's result (or an action handed back). The result of an unfinished operation
  /// is accepted from the worker that reports it, even one whose action was queued again
  /// meanwhile: it is the action's result, and any other copy is stopped.
  public func finished(_ id: String, _ message: ActionFinished) async {
    workers[id]?.lastSeen = .now
    let name = message.operationName
    // Told to stop, then given the same action again before the stopped copy ended: the
    // worker took that start for the running copy, so nothing runs it now.
    let startLost = killed.contains(name) && runningOn[name] == id
    release(name, from: id)
    if killed.remove(name) != nil && !message.handedBack {
      if startLost { await handBackLostStart(name, worker: id) }
      dispatchWake.yield()
      return
    }
    if !message.handedBack, store.health.unavailableReason != nil {
      // The database is away: the result waits for the sweeper at once, rather than after
      // a query timeout that would hold up this worker's stream and its keep-alives.
      pendingResults.append((name, id, message.response ?? Self.failure(.internal, "the worker sent no result")))
      logger.debug("result kept until the database is back", metadata: ["worker": "\(id)", "operation": "\(name)"])
      return
    }
    do {
      if message.handedBack {
        _ = try await store.handBack(name, worker: id)
      } else {
        let response = message.response ?? Self.failure(.internal, "the worker sent no result")
        if try await store.finish(name, worker: id, response) {
          metrics.record(response)
        } else {
          logger.debug("result for a finished or unknown operation ignored", metadata: ["worker": "\(id)", "operation": "\(name)"])
        }
      }
    } catch {
      if !message.handedBack {
        pendingResults.append((name, id, message.response ?? Self.failure(.internal, "the worker sent no result")))
      }
    }
    dispatchWake.yield()
  }

  /// The worker's stream ended or it stopped answering: its lease runs out after
  /// `worker_reconnect_grace_seconds` unless it registers again (here or elsewhere) first.
  public func workerGone(_ id: String, session: UInt64? = nil) async {
    if let session, workers[id]?.session != session { return }
    guard let worker = workers.removeValue(forKey: id) else { return }
    for name in worker.running.keys where runningOn[name] == id {
      runningOn[name] = nil
      assignedAt[name] = nil
    }
    for name in worker.running.keys { killed.remove(name) }
    logger.info("worker gone", metadata: ["worker": "\(id)", "running": "\(worker.running.count)"])
    try? await store.releaseWorker(id, graceSeconds: config.workerReconnectGraceSeconds)
  }

  public var workerCount: Int { workers.count }

  // MARK: - Internals

  /// Stops a locally running operation that is no longer this worker's to run.
  func stop(_ name: String, reason: String) {
    guard let id = runningOn[name] else { return }
    var kill = KillAction()
    kill.operationName = name
    var message = SchedulerMessage()
    message.kill = kill
    workers[id]?.send(message)
    killed.insert(name)
    logger.info("told a worker to stop an action", metadata: ["worker": "\(id)", "operation": "\(name)", "reason": "\(reason)"])
    release(name, from: id)
    dispatchWake.yield()
  }

  func release(_ name: String, from id: String) {
    guard runningOn[name] == id else { return }
    runningOn[name] = nil
    assignedAt[name] = nil
    if let started = startedAt.removeValue(forKey: name) { metrics.execution.record(duration: .now - started) }
    guard var worker = workers[id], let key = worker.running.removeValue(forKey: name) else { return }
    for (k, v) in key.reservations(rules) { worker.reserved[k, default: 0] -= v }
    workers[id] = worker
  }

  func drop(watcher id: Int, of name: String) {
    watchers[name]?.continuations[id]?.finish()
    watchers[name]?.continuations[id] = nil
    if watchers[name]?.continuations.isEmpty == true { watchers[name] = nil }
  }

  /// The properties a raw platform key stands for.
  static func properties(_ rawKey: String) -> [Platform.Property] {
    rawKey.split(separator: "\n").compactMap { pair in
      guard let eq = pair.firstIndex(of: "=") else { return nil }
      var p = Platform.Property()
      p.name = String(pair[..<eq])
      p.value = String(pair[eq...].dropFirst())
      return p
    }
  }

  static func failure(_ code: RPCStatusCode, _ message: String) -> ExecuteResponse {
    PostgresSchedulerStore.failure(code, message)
  }
}

extension SharedScheduler: ExecutionScheduler {}
