import ApusConfig
import ApusProto
import Logging

/// Queues actions, hands them to matching workers, merges identical in-flight actions, and
/// keeps each operation's state for its watchers.
///
/// An actor: every event (a client's Execute, a worker's message, the periodic tick) is a
/// short critical section; nothing here waits on I/O. Workers are reached through the
/// `send` closure they registered, which only enqueues.
public actor Scheduler {
  public nonisolated let name: String
  let config: SchedulerConfig
  /// How often workers must ping; fixed by the config, so readable before registering.
  public nonisolated var keepAliveSeconds: Int { config.keepAliveSeconds }
  let matcher: PlatformMatcher
  let logger: Logger
  let metrics: SchedulerMetrics

  struct OperationRecord {
    let name: String
    let job: ExecutionJob
    var stage: ExecutionStage = .queued
    var response: ExecuteResponse?
    var watchers: [Int: AsyncStream<Operation>.Continuation] = [:]
    var worker: String?
    var attempts = 0
    let sequence: UInt64
    var queuedAt: ContinuousClock.Instant
    var assignedAt: ContinuousClock.Instant?
    var completedAt: ContinuousClock.Instant?
    /// Since when connected workers exist but none could ever run this job.
    var unsatisfiableSince: ContinuousClock.Instant?
    var mergeKey: String? { job.mergeable ? "\(job.instanceName)\u{0}\(job.actionDigest)" : nil }
  }

  private var operations: [String: OperationRecord] = [:]
  private var queue: [String] = []
  private var inFlight: [String: String] = [:]
  private var workers: [String: WorkerRecord] = [:]
  private var sequence: UInt64 = 0
  private var nextWatcher = 0

  public init(name: String, config: SchedulerConfig, logger: Logger) {
    self.name = name
    self.config = config
    self.matcher = PlatformMatcher(rules: config.platformProperties)
    self.logger = logger
    self.metrics = SchedulerMetrics(scheduler: name)
  }

  // MARK: - Clients

  /// The timeout a worker enforces for `action`, or an error if it asks for too much.
  public nonisolated func effectiveTimeout(_ action: Action) throws(SchedulerError) -> Duration {
    guard let t = action.timeout, t.seconds > 0 || t.nanos > 0 else {
      return .seconds(config.defaultTimeoutSeconds)
    }
    let requested = Duration.seconds(t.seconds) + .nanoseconds(Int64(t.nanos))
    guard requested <= .seconds(config.maxTimeoutSeconds) else {
      throw SchedulerError(
        .invalidArgument,
        "action timeout \(t.seconds)s exceeds this scheduler's maximum of \(config.maxTimeoutSeconds)s")
    }
    return requested
  }

  /// Queues `job`, or joins an identical one in flight. Returns the operation name.
  public func submit(_ job: ExecutionJob) throws(SchedulerError) -> String {
    try matcher.validate(job.platform)
    _ = try effectiveTimeout(job.action)
    let key = job.mergeable ? "\(job.instanceName)\u{0}\(job.actionDigest)" : nil
    if let key, let existing = inFlight[key], operations[existing]?.response == nil {
      return existing
    }
    sequence += 1
    let name = "operations/\(randomHex())"
    operations[name] = OperationRecord(name: name, job: job, sequence: sequence, queuedAt: .now)
    if let key { inFlight[key] = name }
    enqueue(name)
    dispatch()
    return name
  }

  /// Records an operation answered from the action cache, so it can be looked up later.
  public func recordCompleted(_ job: ExecutionJob, _ response: ExecuteResponse) -> Operation {
    sequence += 1
    let name = "operations/\(randomHex())"
    var record = OperationRecord(name: name, job: job, sequence: sequence, queuedAt: .now)
    record.stage = .completed
    record.response = response
    record.completedAt = .now
    operations[name] = record
    return Self.operation(record)
  }

  /// Current state, then every change until done. `nil` if unknown or expired.
  public func watch(_ name: String) -> AsyncStream<Operation>? {
    guard var record = operations[name] else { return nil }
    let (stream, continuation) = AsyncStream<Operation>.makeStream()
    continuation.yield(Self.operation(record))
    if record.response != nil {
      continuation.finish()
    } else {
      nextWatcher += 1
      let id = nextWatcher
      // A watcher that went away is dropped at the next change (see `notify`), so no task
      // is needed to hop back into the actor from the stream's termination callback.
      record.watchers[id] = continuation
      operations[name] = record
    }
    return stream
  }

  /// The instance the operation was started on; nil if unknown or expired.
  public func instanceName(ofOperation name: String) -> String? {
    operations[name]?.job.instanceName
  }

  public func operation(_ name: String) -> Operation? {
    operations[name].map(Self.operation)
  }

  /// Cancels a queued or running operation. Returns false if unknown; a finished one is
  /// left as it is.
  public func cancel(_ name: String) -> Bool {
    guard let record = operations[name] else { return false }
    guard record.response == nil else { return true }
    if let worker = record.worker {
      var kill = KillAction()
      kill.operationName = name
      var message = SchedulerMessage()
      message.kill = kill
      workers[worker]?.send(message)
      release(name, from: worker)
    }
    queue.removeAll { $0 == name }
    complete(name, Self.failure(.cancelled, "the operation was cancelled"))
    return true
  }

  // MARK: - Workers

  /// Adds a worker and may hand it work at once through `send`.
  public func registerWorker(
    id: String, properties: [Platform.Property], capacity: Int,
    send: @escaping @Sendable (SchedulerMessage) -> Void
  ) throws(SchedulerError) {
    guard workers[id] == nil else {
      throw SchedulerError(.alreadyExists, "a worker named \"\(id)\" is already connected")
    }
    var props: [String: [String]] = [:]
    for p in properties { props[p.name, default: []].append(p.value) }
    workers[id] = WorkerRecord(
      id: id, properties: props, capacity: max(1, capacity), lastSeen: .now, send: send)
    logger.info("worker registered", metadata: ["worker": "\(id)", "capacity": "\(capacity)", "properties": "\(props)"])
    dispatch()
  }

  public func keepAlive(_ id: String) {
    workers[id]?.lastSeen = .now
  }

  /// The worker takes no more actions.
  public func drain(_ id: String) {
    workers[id]?.draining = true
  }

  public func finished(_ id: String, _ message: ActionFinished) {
    workers[id]?.lastSeen = .now
    let name = message.operationName
    guard let record = operations[name], record.worker == id, record.response == nil else { return }
    release(name, from: id)
    if message.handedBack {
      requeue(name, countAttempt: false)
    } else {
      complete(name, message.response ?? Self.failure(.internal, "the worker sent no result"))
    }
    dispatch()
  }

  /// The worker's stream ended or it stopped answering: its actions go back in the queue.
  public func workerGone(_ id: String) {
    guard let worker = workers.removeValue(forKey: id) else { return }
    logger.info("worker gone", metadata: ["worker": "\(id)", "running": "\(worker.running.count)"])
    for name in worker.running {
      operations[name]?.worker = nil
      requeue(name, countAttempt: true)
    }
    dispatch()
  }

  public var workerCount: Int { workers.count }

  /// Queue and fleet now, grouped by platform. Walks the queue: meant for a scrape or a
  /// status poll, not for every event.
  public func snapshot() -> SchedulerSnapshot {
    let now = ContinuousClock.now
    struct Load { var queued = 0, running = 0; var oldest: ContinuousClock.Instant?; var platform: [Platform.Property] }
    var loads: [[String: String]: Load] = [:]
    func key(_ platform: [Platform.Property]) -> [String: String] {
      platform.reduce(into: [:]) { all, p in all[p.name] = all[p.name].map { "\($0),\(p.value)" } ?? p.value }
    }
    for name in queue {
      guard let record = operations[name] else { continue }
      let k = key(record.job.platform)
      var load = loads[k] ?? Load(platform: record.job.platform)
      load.queued += 1
      load.oldest = min(load.oldest ?? record.queuedAt, record.queuedAt)
      loads[k] = load
    }
    for worker in workers.values {
      for name in worker.running {
        guard let record = operations[name] else { continue }
        let k = key(record.job.platform)
        loads[k, default: Load(platform: record.job.platform)].running += 1
      }
    }
    let platforms = loads.map { k, load -> SchedulerSnapshot.PlatformLoad in
      let able = workers.values.filter { matcher.matches(load.platform, $0, ignoringLoad: true) }
      let perWorker = able.isEmpty ? nil : Double(able.reduce(0) { $0 + $1.capacity }) / Double(able.count)
      return .init(
        platform: k, queued: load.queued, running: load.running, oldestQueued: load.oldest.map { now - $0 },
        slotsPerWorker: perWorker,
        desiredWorkers: SchedulerSnapshot.desiredWorkers(queued: load.queued, running: load.running, slotsPerWorker: perWorker))
    }.sorted { $0.label < $1.label }
    let fleet = workers.values.sorted { $0.id < $1.id }.map {
      SchedulerSnapshot.WorkerState(
        id: $0.id, properties: $0.properties, slots: $0.capacity, busy: $0.running.count, draining: $0.draining,
        sinceKeepAlive: now - $0.lastSeen)
    }
    return SchedulerSnapshot(
      queued: queue.count, running: platforms.reduce(0) { $0 + $1.running },
      oldestQueued: platforms.compactMap(\.oldestQueued).max(), platforms: platforms, workers: fleet)
  }
  public var queueLength: Int { queue.count }

  // MARK: - Time

  /// Evicts silent workers, fails actions no worker can ever run, forgets old operations.
  public func tick() {
    let now = ContinuousClock.now
    for (id, w) in workers where now - w.lastSeen > .seconds(config.workerTimeoutSeconds) {
      logger.warning("worker timed out", metadata: ["worker": "\(id)"])
      workerGone(id)
    }
    // With no worker connected there is nothing to judge against (start-up, a fleet scaling
    // from zero): actions wait. Otherwise an action fails once no connected worker could
    // ever run it, continuously, for the grace period.
    for name in queue {
      guard let record = operations[name] else { continue }
      let runnable =
        workers.isEmpty
        || workers.values.contains { matcher.matches(record.job.platform, $0, ignoringLoad: true) }
      if runnable {
        operations[name]?.unsatisfiableSince = nil
        continue
      }
      guard let since = record.unsatisfiableSince else {
        operations[name]?.unsatisfiableSince = now
        continue
      }
      guard now - since >= .seconds(config.unsatisfiableGraceSeconds) else { continue }
      queue.removeAll { $0 == name }
      let wanted = record.job.platform.map { "\($0.name)=\($0.value)" }.joined(separator: ", ")
      complete(
        name,
        Self.failure(
          .failedPrecondition,
          "no connected worker can run this action (platform: \(wanted.isEmpty ? "none" : wanted); \(workers.count) worker(s) connected)"))
    }
    for (name, record) in operations {
      if let done = record.completedAt, now - done > .seconds(config.completedOperationSeconds) {
        operations[name] = nil
      }
    }
  }

  // MARK: - Internals

  private func enqueue(_ name: String) {
    guard let record = operations[name] else { return }
    let i = queue.firstIndex { other in
      guard let o = operations[other] else { return false }
      return (record.job.priority, record.sequence) < (o.job.priority, o.sequence)
    }
    queue.insert(name, at: i ?? queue.endIndex)
    notify(name)
  }

  private func requeue(_ name: String, countAttempt: Bool) {
    guard var record = operations[name], record.response == nil else { return }
    if countAttempt {
      record.attempts += 1
      metrics.retried.increment()
    }
    record.stage = .queued
    record.queuedAt = .now
    operations[name] = record
    if record.attempts > config.maxJobRetries {
      complete(
        name,
        Self.failure(.unavailable, "the action's worker was lost \(record.attempts) times; giving up"))
    } else {
      enqueue(name)
    }
  }

  private func dispatch() {
    var remaining: [String] = []
    for name in queue {
      guard let record = operations[name] else { continue }
      let candidates = workers.values.filter {
        $0.hasFreeSlot && matcher.matches(record.job.platform, $0, ignoringLoad: false)
      }
      guard let worker = candidates.min(by: { $0.running.count < $1.running.count }) else {
        remaining.append(name)
        continue
      }
      assign(name, to: worker.id)
    }
    queue = remaining
  }

  private func assign(_ name: String, to id: String) {
    guard var record = operations[name], var worker = workers[id] else { return }
    record.stage = .executing
    record.worker = id
    let now = ContinuousClock.now
    metrics.queueWait.record(duration: now - record.queuedAt)
    record.assignedAt = now
    operations[name] = record
    worker.running.insert(name)
    for (k, v) in matcher.reservations(record.job.platform) { worker.reserved[k, default: 0] += v }
    workers[id] = worker
    var start = StartAction()
    start.operationName = name
    start.instanceName = record.job.instanceName
    start.actionDigest = record.job.actionDigest.proto
    start.action = record.job.action
    let timeout = (try? effectiveTimeout(record.job.action)) ?? .seconds(config.defaultTimeoutSeconds)
    var duration = ProtoDuration()
    duration.seconds = timeout.components.seconds
    duration.nanos = Int32(timeout.components.attoseconds / 1_000_000_000)
    start.timeout = duration
    var message = SchedulerMessage()
    message.start = start
    worker.send(message)
    notify(name)
  }

  private func release(_ name: String, from id: String) {
    guard var worker = workers[id], let record = operations[name] else { return }
    worker.running.remove(name)
    for (k, v) in matcher.reservations(record.job.platform) { worker.reserved[k, default: 0] -= v }
    workers[id] = worker
    operations[name]?.worker = nil
  }

  private func complete(_ name: String, _ response: ExecuteResponse) {
    guard var record = operations[name], record.response == nil else { return }
    record.stage = .completed
    record.response = response
    record.completedAt = .now
    if let assigned = record.assignedAt { metrics.execution.record(duration: .now - assigned) }
    metrics.record(response)
    let watchers = record.watchers
    record.watchers = [:]
    operations[name] = record
    if let key = record.mergeKey, inFlight[key] == name { inFlight[key] = nil }
    let op = Self.operation(record)
    for w in watchers.values {
      w.yield(op)
      w.finish()
    }
  }

  private func notify(_ name: String) {
    guard let record = operations[name] else { return }
    let op = Self.operation(record)
    for (id, w) in record.watchers {
      if case .terminated = w.yield(op) { operations[name]?.watchers[id] = nil }
    }
  }

  static func operation(_ record: OperationRecord) -> Operation {
    var metadata = ExecuteOperationMetadata()
    metadata.stage = record.stage
    metadata.actionDigest = record.job.actionDigest.proto
    var op = Operation()
    op.name = record.name
    op.metadata = AnyMessage(
      packing: metadata, fullName: "build.bazel.remote.execution.v2.ExecuteOperationMetadata")
    if let response = record.response {
      op.done = true
      op.response = AnyMessage(
        packing: response, fullName: "build.bazel.remote.execution.v2.ExecuteResponse")
    }
    return op
  }

  /// An ExecuteResponse carrying only an error status (never cached, no result).
  static func failure(_ code: RPCStatusCode, _ message: String) -> ExecuteResponse {
    var response = ExecuteResponse()
    response.status = RPCStatusMessage(code, message)
    return response
  }

  private func randomHex() -> String {
    String(UInt64.random(in: 0...UInt64.max), radix: 16) + String(UInt64.random(in: 0...UInt64.max), radix: 16)
  }
}
