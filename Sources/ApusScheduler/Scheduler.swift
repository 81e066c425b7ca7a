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

  /// A class, not a struct: the operations table then holds one pointer per operation, so
  /// growing it copies and frees 8 bytes per entry instead of the whole record, and RSS per
  /// queued action stays near what the records use.
  final class OperationRecord {
    let name: String
    let job: ExecutionJob
    /// The queue lane of its platform requirements.
    let lane: PlatformKey
    var stage: ExecutionStage = .queued
    /// Boxed: an ExecuteResponse is ~350 bytes inline and queued or running records (most of
    /// them, with a deep queue) have none.
    var responseBox: ResponseBox?
    var response: ExecuteResponse? {
      get { responseBox?.value }
      set { responseBox = newValue.map(ResponseBox.init) }
    }
    /// Empty (no allocation) unless someone watches.
    var watchers: [Int: AsyncStream<Operation>.Continuation] = [:]
    var worker: String?
    /// Workers that ran it before it was requeued: their late result is still accepted.
    var formerWorkers: [String] = []
    var attempts = 0
    let sequence: UInt64
    var queuedAt: ContinuousClock.Instant
    var assignedAt: ContinuousClock.Instant?
    var completedAt: ContinuousClock.Instant?
    var mergeKey: MergeKey? { MergeKey(job) }

    init(name: String, job: ExecutionJob, lane: PlatformKey, sequence: UInt64, queuedAt: ContinuousClock.Instant) {
      self.name = name
      self.job = job
      self.lane = lane
      self.sequence = sequence
      self.queuedAt = queuedAt
    }
  }

  /// An operation's result, held by reference (see `OperationRecord.response`).
  final class ResponseBox: Sendable {
    let value: ExecuteResponse
    init(_ value: ExecuteResponse) { self.value = value }
  }

  /// What identical in-flight actions share: compared as values, not as a built string.
  struct MergeKey: Hashable {
    let instance: String
    let digest: BlobDigest

    init?(_ job: ExecutionJob) {
      guard job.mergeable else { return nil }
      instance = job.instanceName
      digest = job.actionDigest
    }
  }

  /// A worker whose stream ended, holding its running actions until `until`.
  struct Disconnected {
    var running: Set<String>
    let until: ContinuousClock.Instant
  }

  private var operations: [String: OperationRecord] = [:]
  private var queue = ActionQueue()
  private var index: WorkerIndex
  private var inFlight: [MergeKey: String] = [:]
  private var disconnected: [String: Disconnected] = [:]
  /// The session of each connected worker's registration (see `workerGone(_:session:)`).
  private var sessions: [String: UInt64] = [:]
  private var sequence: UInt64 = 0
  private var nextWatcher = 0
  /// Finished operations by completion time, for expiry without walking every operation.
  private var completedOrder: [(at: ContinuousClock.Instant, name: String)] = []
  private var completedHead = 0
  /// Every operation by sequence (stale entries skipped), for ListOperations' stable order.
  private var listing: [(sequence: UInt64, name: String)] = []

  public init(name: String, config: SchedulerConfig, logger: Logger) {
    self.name = name
    self.config = config
    self.matcher = PlatformMatcher(rules: config.platformProperties)
    self.index = WorkerIndex(matcher: matcher)
    self.logger = logger
    self.metrics = SchedulerMetrics(scheduler: name)
  }

  // MARK: - Clients

  /// The timeout a worker enforces for `action`, or an error if it asks for too much.
  public nonisolated func effectiveTimeout(_ action: Action) throws(SchedulerError) -> Duration {
    try config.effectiveTimeout(action)
  }

  /// Queues `job`, or joins an identical one in flight. Returns the operation name.
  public func submit(_ job: ExecutionJob) throws(SchedulerError) -> String {
    try matcher.validate(job.platform)
    _ = try effectiveTimeout(job.action)
    let key = MergeKey(job)
    if let key, let existing = inFlight[key], operations[existing]?.response == nil {
      return existing
    }
    guard queue.count(instance: job.instanceName) < config.maxQueuedActions else {
      metrics.rejectedQueueFull.increment()
      throw SchedulerError(
        .resourceExhausted,
        "\(config.maxQueuedActions) actions are queued for instance \"\(job.instanceName)\", the scheduler's max_queued_actions; retry later")
    }
    sequence += 1
    let name = "operations/\(randomHex())"
    operations[name] = OperationRecord(
      name: name, job: job, lane: queue.canonical(PlatformKey(job.platform, rules: config.platformProperties)),
      sequence: sequence, queuedAt: .now)
    listing.append((sequence, name))
    if let key { inFlight[key] = name }
    place(name)
    return name
  }

  /// Records an operation answered from the action cache, so it can be looked up later.
  public func recordCompleted(_ job: ExecutionJob, _ response: ExecuteResponse) -> Operation {
    sequence += 1
    let name = "operations/\(randomHex())"
    let now = ContinuousClock.now
    let record = OperationRecord(
      name: name, job: job, lane: PlatformKey(job.platform, rules: config.platformProperties),
      sequence: sequence, queuedAt: now)
    record.stage = .completed
    record.response = response
    record.completedAt = now
    operations[name] = record
    listing.append((sequence, name))
    completedOrder.append((now, name))
    return Self.operation(record)
  }

  /// Current state, then every change until done. `nil` if unknown or expired.
  public func watch(_ name: String) -> AsyncStream<Operation>? {
    subscribe(name)?.stream
  }

  /// A watch that its caller ends with `unsubscribe` when it stops reading (a client that
  /// dropped its Execute stream), so a queued operation holds no dead watcher.
  public struct Subscription: Sendable {
    public let stream: AsyncStream<Operation>
    public let id: Int
  }

  public func subscribe(_ name: String) -> Subscription? {
    guard let record = operations[name] else { return nil }
    let (stream, continuation) = AsyncStream<Operation>.makeStream()
    continuation.yield(Self.operation(record))
    nextWatcher += 1
    let id = nextWatcher
    if record.response != nil {
      continuation.finish()
    } else {
      // A watcher that went away without unsubscribing is dropped at the next change (see
      // `notify`), so no task is needed to hop back into the actor from the stream's
      // termination callback.
      record.watchers[id] = continuation
      operations[name] = record
    }
    return Subscription(stream: stream, id: id)
  }

  public func unsubscribe(_ name: String, _ id: Int) {
    guard operations[name]?.watchers[id] != nil else { return }
    operations[name]?.watchers[id]?.finish()
    operations[name]?.watchers[id] = nil
  }

  /// The instance the operation was started on; nil if unknown or expired.
  public func instanceName(ofOperation name: String) -> String? {
    operations[name]?.job.instanceName
  }

  public func operation(_ name: String) -> Operation? {
    operations[name].map(Self.operation)
  }

  /// One page of the operations of `instance` (running and finished ones not yet expired),
  /// in the order they were created, starting after the one whose page token is `after`.
  /// Returns the next page token, nil after the last page. Scans from the token: O(page)
  /// when one instance holds most operations.
  public func listOperations(instance: String, pageSize: Int, after: UInt64?) -> (
    operations: [Operation], next: UInt64?
  ) {
    var low = 0, high = listing.count
    if let after {
      while low < high {
        let mid = (low + high) / 2
        if listing[mid].sequence <= after { low = mid + 1 } else { high = mid }
      }
    }
    var page: [Operation] = []
    var i = low
    while i < listing.count {
      defer { i += 1 }
      guard let record = operations[listing[i].name], record.job.instanceName == instance else { continue }
      page.append(Self.operation(record))
      if page.count == pageSize { return (page, i + 1 < listing.count ? record.sequence : nil) }
    }
    return (page, nil)
  }

  /// Forgets a finished operation. A running or queued one is FAILED_PRECONDITION (cancel
  /// it first): deleting would leave its watchers and its worker without an owner.
  public func deleteOperation(_ name: String) throws(SchedulerError) {
    guard let record = operations[name] else {
      throw SchedulerError(.notFound, "operation \"\(name)\" is not known (or has expired)")
    }
    guard record.response != nil else {
      throw SchedulerError(
        .failedPrecondition, "operation \"\(name)\" has not finished; cancel it before deleting it")
    }
    operations[name] = nil
  }

  /// Cancels a queued or running operation. Returns false if unknown; a finished one is
  /// left as it is.
  public func cancel(_ name: String) -> Bool {
    guard let record = operations[name] else { return false }
    guard record.response == nil else { return true }
    queue.remove(name)
    complete(name, Self.failure(.cancelled, "the operation was cancelled"))
    if let worker = record.worker {
      kill(name, on: worker)
      release(name, from: worker)
      fill(worker)
    }
    return true
  }

  // MARK: - Workers

  /// Adds a worker and may hand it work at once through `send`. A worker registering again
  /// within `worker_reconnect_grace_seconds` of its stream's end keeps the actions it
  /// lists in `runningOperations`; the others it held go back to the queue at once.
  public func registerWorker(
    id: String, properties: [Platform.Property], capacity: Int, runningOperations: [String] = [],
    session: UInt64 = 0, send: @escaping @Sendable (SchedulerMessage) -> Void
  ) throws(SchedulerError) {
    guard index[id] == nil else {
      throw SchedulerError(.alreadyExists, "a worker named \"\(id)\" is already connected")
    }
    var props: [String: [String]] = [:]
    for p in properties { props[p.name, default: []].append(p.value) }
    var worker = WorkerRecord(id: id, properties: props, capacity: max(1, capacity), lastSeen: .now, send: send)
    var lost: [String] = []
    if let held = disconnected.removeValue(forKey: id) {
      let listed = Set(runningOperations)
      for name in held.running {
        guard let record = operations[name], record.response == nil, record.worker == id else { continue }
        if listed.contains(name) {
          worker.running.insert(name)
          for (k, v) in matcher.reservations(record.job.platform) { worker.reserved[k, default: 0] += v }
        } else {
          lost.append(name)
        }
      }
    }
    index.add(worker)
    sessions[id] = session
    logger.info(
      "worker registered",
      metadata: [
        "worker": "\(id)", "capacity": "\(capacity)", "properties": "\(props)",
        "kept": "\(worker.running.count)", "lost": "\(lost.count)",
      ])
    lose(lost, of: id)
    fill(id)
  }

  public func keepAlive(_ id: String) {
    index.touch(id)
  }

  /// The worker takes no more actions.
  public func drain(_ id: String) {
    index.update(id) { $0.draining = true }
  }

  /// A worker's result. Accepted from the worker running the operation, and also from one
  /// that ran it before it was requeued (a late result wins: the copy now running is
  /// killed). The first result wins; others, and results for unknown operations, are
  /// ignored.
  public func finished(_ id: String, _ message: ActionFinished) {
    index.touch(id)
    let name = message.operationName
    guard let record = operations[name] else {
      logger.debug("result for an unknown operation ignored", metadata: ["worker": "\(id)", "operation": "\(name)"])
      return
    }
    guard record.response == nil else {
      logger.debug("result for a finished operation ignored", metadata: ["worker": "\(id)", "operation": "\(name)"])
      return
    }
    let response = message.response ?? Self.failure(.internal, "the worker sent no result")
    if record.worker == id {
      release(name, from: id)
      if message.handedBack {
        requeue(name, countAttempt: false)
      } else {
        complete(name, response)
      }
      fill(id)
    } else if record.formerWorkers.contains(id) && !message.handedBack {
      logger.info("late result accepted", metadata: ["worker": "\(id)", "operation": "\(name)"])
      queue.remove(name)
      complete(name, response)
      if let other = record.worker {
        kill(name, on: other)
        release(name, from: other)
        fill(other)
      }
    } else {
      logger.debug("result from a worker not running the operation ignored", metadata: ["worker": "\(id)", "operation": "\(name)"])
    }
  }

  /// The worker's stream ended or it stopped answering. Its actions stay its own for the
  /// reconnect grace, then go back in the queue.
  public func workerGone(_ id: String, session: UInt64? = nil) {
    if let session, sessions[id] != session { return }
    sessions[id] = nil
    guard let worker = index.remove(id) else { return }
    logger.info("worker gone", metadata: ["worker": "\(id)", "running": "\(worker.running.count)"])
    if config.workerReconnectGraceSeconds > 0 && !worker.running.isEmpty {
      disconnected[id] = Disconnected(
        running: worker.running, until: .now + .seconds(config.workerReconnectGraceSeconds))
    } else {
      lose(Array(worker.running), of: id)
    }
  }

  public var workerCount: Int { index.count }

  /// Queue and fleet now, grouped by platform. Walks the queue: meant for a scrape or a
  /// status poll, not for every event.
  public func snapshot() -> SchedulerSnapshot {
    let now = ContinuousClock.now
    struct Load { var queued = 0, running = 0; var oldest: ContinuousClock.Instant?; var platform: [Platform.Property] }
    var loads: [[String: String]: Load] = [:]
    func key(_ platform: [Platform.Property]) -> [String: String] {
      platform.reduce(into: [:]) { all, p in all[p.name] = all[p.name].map { "\($0),\(p.value)" } ?? p.value }
    }
    for name in queue.names {
      guard let record = operations[name] else { continue }
      let k = key(record.job.platform)
      var load = loads[k] ?? Load(platform: record.job.platform)
      load.queued += 1
      load.oldest = min(load.oldest ?? record.queuedAt, record.queuedAt)
      loads[k] = load
    }
    let workers = index.workers
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

  /// Evicts silent workers, requeues the actions of workers that did not come back, fails
  /// actions no worker can ever run, forgets old operations.
  public func tick() {
    let now = ContinuousClock.now
    let silent = index.workers.values.filter { now - $0.lastSeen > .seconds(config.workerTimeoutSeconds) }
    for w in silent {
      logger.warning("worker timed out", metadata: ["worker": "\(w.id)"])
      workerGone(w.id)
    }
    for (id, held) in disconnected where held.until <= now {
      disconnected[id] = nil
      logger.info("worker did not reconnect", metadata: ["worker": "\(id)", "running": "\(held.running.count)"])
      lose(Array(held.running), of: id)
    }
    // With no worker connected there is nothing to judge against (start-up, a fleet scaling
    // from zero): actions wait. Otherwise an action fails once no connected worker could
    // ever run it, continuously, for the grace period. Judged per lane: its actions share
    // their requirements.
    let grace = Duration.seconds(config.unsatisfiableGraceSeconds)
    // Only keys and scalars are read out of the lanes: a copy of a lane held while the
    // queue changes would copy its heap.
    for key in Array(queue.lanes.keys) where queue.lanes[key]?.live ?? 0 > 0 {
      let unsatisfiableSince = queue.lanes[key]?.unsatisfiableSince
      if index.isEmpty || index.anyCouldRun(key) {
        if unsatisfiableSince != nil { queue.setUnsatisfiableSince(key, nil) }
        continue
      }
      guard let since = unsatisfiableSince else {
        queue.setUnsatisfiableSince(key, now)
        continue
      }
      guard now - since >= grace else { continue }
      for entry in queue.entries(key) {
        guard let record = operations[entry.name], now - max(since, record.queuedAt) >= grace else { continue }
        queue.remove(entry.name)
        let wanted = record.job.platform.map { "\($0.name)=\($0.value)" }.joined(separator: ", ")
        complete(
          entry.name,
          Self.failure(
            .failedPrecondition,
            "no connected worker can run this action (platform: \(wanted.isEmpty ? "none" : wanted); \(index.count) worker(s) connected)"))
      }
    }
    if queue.dropEmptyLanes() { index.lanesChanged() }
    let keep = Duration.seconds(config.completedOperationSeconds)
    while completedHead < completedOrder.count, now - completedOrder[completedHead].at > keep {
      let (at, name) = completedOrder[completedHead]
      if operations[name]?.completedAt == at { operations[name] = nil }
      completedHead += 1
    }
    if completedHead > 1024 && completedHead * 2 > completedOrder.count {
      completedOrder.removeFirst(completedHead)
      completedHead = 0
    }
    if listing.count > 2 * operations.count + 1024 {
      listing.removeAll { operations[$0.name] == nil }
    }
  }

  // MARK: - Internals

  /// Hands the operation to the best free worker able to run it, or queues it.
  private func place(_ name: String) {
    guard let record = operations[name], record.response == nil else { return }
    if let worker = index.bestWorker(for: record.lane) {
      assign(name, to: worker)
      return
    }
    let newLane = queue.insert(
      name, key: record.lane, instance: record.job.instanceName, priority: record.job.priority,
      sequence: record.sequence)
    if newLane { index.lanesChanged() }
    notify(name)
  }

  /// Gives a worker with free slots the first queued actions it can run: the best head
  /// among the lanes its class matches.
  private func fill(_ id: String) {
    while index[id]?.hasFreeSlot == true {
      var best: ActionQueue.Entry?
      for lane in index.lanes(for: id, among: queue.lanes.keys) where index.fits(lane, id) {
        if let head = queue.head(lane), best.map({ head < $0 }) ?? true { best = head }
      }
      guard let best else { return }
      queue.remove(best.name)
      assign(best.name, to: id)
    }
  }

  /// Actions a worker held when it was lost go back in the queue, counting an attempt.
  private func lose(_ names: [String], of id: String) {
    for name in names {
      guard operations[name]?.worker == id else { continue }
      operations[name]?.worker = nil
      operations[name]?.formerWorkers.append(id)
      requeue(name, countAttempt: true)
    }
  }

  private func requeue(_ name: String, countAttempt: Bool) {
    guard let record = operations[name], record.response == nil else { return }
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
      place(name)
    }
  }

  private func assign(_ name: String, to id: String) {
    guard let record = operations[name], let send = index[id]?.send else { return }
    record.stage = .executing
    record.worker = id
    let now = ContinuousClock.now
    metrics.queueWait.record(duration: now - record.queuedAt)
    record.assignedAt = now
    operations[name] = record
    let reservations = matcher.reservations(record.job.platform)
    index.update(id) { w in
      w.running.insert(name)
      for (k, v) in reservations { w.reserved[k, default: 0] += v }
    }
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
    send(message)
    notify(name)
  }

  private func kill(_ name: String, on worker: String) {
    var kill = KillAction()
    kill.operationName = name
    var message = SchedulerMessage()
    message.kill = kill
    index[worker]?.send(message)
  }

  /// The worker no longer runs the operation: its slot and reservations are free again.
  private func release(_ name: String, from id: String) {
    if operations[name]?.worker == id { operations[name]?.worker = nil }
    guard index[id] != nil else {
      disconnected[id]?.running.remove(name)
      return
    }
    let reservations = operations[name].map { matcher.reservations($0.job.platform) } ?? [:]
    index.update(id) { w in
      w.running.remove(name)
      for (k, v) in reservations { w.reserved[k, default: 0] -= v }
    }
  }

  private func complete(_ name: String, _ response: ExecuteResponse) {
    guard let record = operations[name], record.response == nil else { return }
    let now = ContinuousClock.now
    record.stage = .completed
    record.response = response
    record.completedAt = now
    if let assigned = record.assignedAt { metrics.execution.record(duration: now - assigned) }
    metrics.record(response)
    let watchers = record.watchers
    record.watchers = [:]
    operations[name] = record
    completedOrder.append((now, name))
    if let key = record.mergeKey, inFlight[key] == name { inFlight[key] = nil }
    guard !watchers.isEmpty else { return }
    let op = Self.operation(record)
    for w in watchers.values {
      w.yield(op)
      w.finish()
    }
  }

  private func notify(_ name: String) {
    guard let record = operations[name], !record.watchers.isEmpty else { return }
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
