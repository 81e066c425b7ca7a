import ApusConfig
import ApusProto
import ApusScheduler
import Logging
import NIOCore
import PostgresNIO

/// A scheduler's operations, queue and worker leases in PostgreSQL, shared by every
/// scheduler process that names the same database and scheduler.
///
/// Each method is one short statement (or one transaction) that commits before it returns,
/// so whatever a client was told survives the process. Rows are namespaced by the
/// scheduler's config name; operation names are random and global, so any process answers
/// for any operation. A statement that fails or outlasts `query_timeout_seconds` throws
/// `SchedulerError(.unavailable, …)` naming the database and records the outage in
/// `health` (`/readyz`).
public final class PostgresSchedulerStore: Sendable {
  public let scheduler: String
  /// This process's id as a lease owner (random per start).
  public let owner: String
  public let config: PostgresStateConfig
  public let health: PostgresHealth
  let client: PostgresClient
  let logger: Logger
  let maxJobRetries: Int

  public init(scheduler: String, config: PostgresStateConfig, maxJobRetries: Int, logger: Logger) throws {
    self.scheduler = scheduler
    self.owner = "\(scheduler)-\(String(UInt64.random(in: 0...UInt64.max), radix: 16))"
    self.config = config
    self.maxJobRetries = maxJobRetries
    self.logger = logger
    self.health = PostgresHealth(database: config.displayName)
    self.client = PostgresClient(configuration: try .init(config), backgroundLogger: logger)
  }

  /// Runs the connection pool until cancelled; every other method needs it running.
  public func run() async {
    await client.run()
  }

  /// Creates or migrates the tables (safe with several processes starting at once).
  public func migrate() async throws(SchedulerError) {
    let client = self.client
    let logger = self.logger
    try await perform("migrating the schema") { try await SchedulerSchema.migrate(client, logger: logger) }
  }

  // MARK: - Operations

  /// Queues `job` as a new operation, or joins the unfinished mergeable operation for the
  /// same action (whichever scheduler process created it). Committed when this returns.
  public func submit(_ job: ExecutionJob, key: PlatformKey, timeoutSeconds: Int64) async throws(SchedulerError) -> (
    name: String, merged: Bool
  ) {
    let submitted = try await submit(
      job, name: Self.newName(), key: key, timeoutSeconds: timeoutSeconds, registerKey: true, directTo: nil)
    return (submitted.name, submitted.merged)
  }

  /// What `submit` did with a job.
  public struct Submitted: Sendable {
    public var name: String
    /// Joined an identical operation in flight (whose state is not known here).
    public var merged: Bool
    /// Inserted already executing on the `directTo` worker rather than queued.
    public var direct: Bool
  }

  /// `submit`, in one statement, naming a new operation `name`. With `directTo` (a free worker of this process that can run
  /// it), a new operation is inserted already executing on that worker when nothing of the
  /// keys `ahead` (those the worker can run) is queued, so nobody waiting is overtaken; it
  /// then costs no claim, no notification and no other process a dispatch pass. Otherwise it
  /// is queued. `registerKey`: the platform is not known to be in `apus_platforms` yet.
  public func submit(
    _ job: ExecutionJob, name: String, key: PlatformKey, timeoutSeconds: Int64, registerKey: Bool,
    directTo worker: String?,
    ahead: [PlatformKey] = []
  ) async throws(SchedulerError) -> Submitted {
    let start = Self.start(job, timeoutSeconds: timeoutSeconds)
    let platform = Self.platformBytes(job.platform)
    let (scheduler, digest, lease) = (self.scheduler, "\(job.actionDigest)", config.leaseSeconds)
    let waiting = (ahead.contains(key) ? ahead : ahead + [key]).map(\.rawValue)
    if registerKey { try await registerPlatform(key) }
    return try await perform("queueing an action") { [client, logger] in
      // The in-flight row may finish between the INSERT and the SELECT: then try again (under
      // the same name: nothing was inserted).
      for _ in 0..<5 {
        for try await stage in try await client.query(
          """
          INSERT INTO apus_operations
            (name, scheduler, instance, action_digest, mergeable, platform_key, priority, stage, start, platform,
             timeout_seconds, worker, assigned_at, execute_deadline)
          SELECT \(name), \(scheduler), \(job.instanceName), \(digest), \(job.mergeable), \(key.rawValue),
            \(Int(job.priority)), CASE WHEN d.direct THEN 3 ELSE 2 END, \(start), \(platform), \(timeoutSeconds),
            CASE WHEN d.direct THEN \(worker)::text END, CASE WHEN d.direct THEN now() END,
            CASE WHEN d.direct THEN now() + make_interval(secs => \(timeoutSeconds) + \(lease)) END
          FROM (SELECT \(worker)::text IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM apus_operations
            WHERE scheduler = \(scheduler) AND stage = 2 AND platform_key = ANY(\(waiting)::text[])) AS direct) d
          ON CONFLICT (scheduler, instance, action_digest) WHERE mergeable AND stage <> 4 DO NOTHING
          RETURNING stage
          """, logger: logger
        ).decode(Int16.self) {
          return Submitted(name: name, merged: false, direct: stage == 3)
        }
        for try await existing in try await client.query(
          """
          SELECT name FROM apus_operations
          WHERE scheduler = \(scheduler) AND instance = \(job.instanceName) AND action_digest = \(digest)
            AND mergeable AND stage <> 4
          """, logger: logger
        ).decode(String.self) {
          return Submitted(name: existing, merged: true, direct: false)
        }
      }
      throw SchedulerError(.aborted, "the identical action kept finishing while this one was being queued; retry")
    }
  }

  /// Stores an operation answered without running (from the action cache), so
  /// GetOperation and WaitExecution find it on any scheduler.
  public func recordCompleted(_ job: ExecutionJob, key: PlatformKey, _ response: ExecuteResponse) async throws(
    SchedulerError
  ) -> String {
    let name = Self.newName()
    let start = Self.start(job, timeoutSeconds: 0)
    let platform = Self.platformBytes(job.platform)
    let (scheduler, digest, result) = (self.scheduler, "\(job.actionDigest)", Self.bytes(response))
    try await perform("recording a cached result") { [client, logger] in
      try await client.query(
        """
        INSERT INTO apus_operations
          (name, scheduler, instance, action_digest, mergeable, platform_key, priority, stage, start, platform,
           timeout_seconds, response, completed_at)
        VALUES (\(name), \(scheduler), \(job.instanceName), \(digest), false, \(key.rawValue), \(Int(job.priority)),
          4, \(start), \(platform), 0, \(result), now())
        """, logger: logger)
    }
    return name
  }

  /// One operation as clients see it; nil if unknown or expired.
  public func operation(_ name: String) async throws(SchedulerError) -> StoredOperation? {
    try await operations([name]).first
  }

  /// The operations named that exist.
  public func operations(_ names: [String]) async throws(SchedulerError) -> [StoredOperation] {
    guard !names.isEmpty else { return [] }
    let scheduler = self.scheduler
    return try await perform("reading operations") { [client, logger] in
      var out: [StoredOperation] = []
      for try await (name, instance, digest, stage, response, worker) in try await client.query(
        """
        SELECT name, instance, action_digest, stage, response, worker FROM apus_operations
        WHERE scheduler = \(scheduler) AND name = ANY(\(names))
        """, logger: logger
      ).decode((String, String, String, Int16, ByteBuffer?, String?).self) {
        out.append(
          StoredOperation(
            name: name, instanceName: instance, actionDigest: Self.digest(digest),
            stage: ExecutionStage(rawValue: Int32(stage)),
            response: try response.map { try ExecuteResponse(serializedBytes: Array($0.readableBytesView)) },
            worker: worker))
      }
      return out
    }
  }

  /// Finishes an unfinished operation as cancelled. Returns nil if unknown, else the worker
  /// that was running it (whose scheduler must tell it to stop), if any.
  public func cancel(_ name: String) async throws(SchedulerError) -> (found: Bool, worker: String?) {
    let scheduler = self.scheduler
    let response = Self.bytes(Self.failure(.cancelled, "the operation was cancelled"))
    return try await perform("cancelling an operation") { [client, logger] in
      for try await (stage, worker) in try await client.query(
        """
        WITH old AS (
          SELECT name, stage, worker FROM apus_operations WHERE scheduler = \(scheduler) AND name = \(name) FOR UPDATE),
        done AS (
          UPDATE apus_operations o SET stage = 4, response = \(response), completed_at = now(), worker = NULL
          FROM old WHERE o.name = old.name AND old.stage <> 4 RETURNING o.name)
        SELECT old.stage, old.worker FROM old
        """, logger: logger
      ).decode((Int16, String?).self) {
        return (true, stage == 4 ? nil : worker)
      }
      return (false, nil)
    }
  }

  /// One page of an instance's operations in creation order after the page token
  /// `after` (the last one's sequence number); the next token, nil after the last page.
  public func list(instance: String, pageSize: Int, after: UInt64?) async throws(SchedulerError) -> (
    operations: [StoredOperation], next: UInt64?
  ) {
    let (scheduler, from, limit) = (self.scheduler, Int64(clamping: after ?? 0), pageSize + 1)
    return try await perform("listing operations") { [client, logger] in
      var out: [(StoredOperation, Int64)] = []
      for try await (name, digest, stage, response, worker, seq) in try await client.query(
        """
        SELECT name, action_digest, stage, response, worker, seq FROM apus_operations
        WHERE scheduler = \(scheduler) AND instance = \(instance) AND seq > \(from) ORDER BY seq LIMIT \(limit)
        """, logger: logger
      ).decode((String, String, Int16, ByteBuffer?, String?, Int64).self) {
        out.append(
          (StoredOperation(
            name: name, instanceName: instance, actionDigest: Self.digest(digest),
            stage: ExecutionStage(rawValue: Int32(stage)),
            response: try response.map { try ExecuteResponse(serializedBytes: Array($0.readableBytesView)) },
            worker: worker), seq))
      }
      let page = Array(out.prefix(pageSize))
      return (page.map(\.0), out.count > pageSize ? page.last.map { UInt64($0.1) } : nil)
    }
  }

  /// Forgets a finished operation: NOT_FOUND if unknown, FAILED_PRECONDITION if unfinished.
  public func delete(_ name: String) async throws(SchedulerError) {
    let scheduler = self.scheduler
    try await perform("deleting an operation") { [client, logger] in
      for try await stage in try await client.query(
        """
        WITH old AS (SELECT name, stage FROM apus_operations WHERE scheduler = \(scheduler) AND name = \(name)),
        gone AS (DELETE FROM apus_operations o USING old WHERE o.name = old.name AND old.stage = 4)
        SELECT stage FROM old
        """, logger: logger
      ).decode(Int16.self) {
        guard stage == 4 else {
          throw SchedulerError(.failedPrecondition, "operation \"\(name)\" has not finished; cancel it before deleting it")
        }
        return
      }
      throw SchedulerError(.notFound, "operation \"\(name)\" is not known (or has expired)")
    }
  }

  // MARK: - Queue

  /// Every platform key with work ever queued for this scheduler (a short list).
  public func platformKeys(rules: [String: SchedulerConfig.PropertyRule]) async throws(SchedulerError) -> [PlatformKey] {
    let scheduler = self.scheduler
    return try await perform("reading platforms") { [client, logger] in
      var out: [PlatformKey] = []
      for try await bytes in try await client.query(
        "SELECT platform FROM apus_platforms WHERE scheduler = \(scheduler)", logger: logger
      ).decode(ByteBuffer.self) {
        let platform = try Platform(serializedBytes: Array(bytes.readableBytesView))
        out.append(PlatformKey(platform.properties, rules: rules))
      }
      return out
    }
  }

  /// Takes up to `limit` queued actions of the given keys for `worker`, oldest of the best
  /// priority first, skipping rows another scheduler is claiming (`FOR UPDATE SKIP LOCKED`).
  /// Claimed actions are executing, assigned to `worker`, when this returns.
  public func claim(worker: String, keys: [PlatformKey], limit: Int) async throws(SchedulerError) -> [ClaimedAction] {
    try await claim(slots: Array(repeating: worker, count: max(0, limit)), keys: keys)
  }

  /// One statement for a group of workers offering the same thing: up to `slots.count`
  /// queued actions of `keys` (per key a `LATERAL` sub-select in queue order, `FOR UPDATE
  /// SKIP LOCKED`, the best of them overall), the i-th going to the worker `slots[i]`.
  public func claim(slots: [String], keys: [PlatformKey]) async throws(SchedulerError) -> [ClaimedAction] {
    guard !keys.isEmpty, !slots.isEmpty else { return [] }
    let (scheduler, lease, limit) = (self.scheduler, config.leaseSeconds, slots.count)
    let raw = keys.map(\.rawValue)
    return try await perform("claiming queued actions") { [client, logger] in
      var out: [ClaimedAction] = []
      for try await (name, worker, start, platform, key, waited, attempts) in try await client.query(
        """
        WITH candidates AS (
          SELECT c.name, c.priority, c.seq FROM unnest(\(raw)::text[]) AS k(key)
          CROSS JOIN LATERAL (
            SELECT name, priority, seq FROM apus_operations
            WHERE scheduler = \(scheduler) AND stage = 2 AND platform_key = k.key
            ORDER BY priority, seq LIMIT \(limit) FOR UPDATE SKIP LOCKED) c
          ORDER BY c.priority, c.seq LIMIT \(limit)),
        picked AS (SELECT name, row_number() OVER (ORDER BY priority, seq) AS i FROM candidates),
        slots AS (SELECT id, i FROM unnest(\(slots)::text[]) WITH ORDINALITY AS s(id, i))
        UPDATE apus_operations o SET stage = 3, worker = slots.id, assigned_at = now(),
          execute_deadline = now() + make_interval(secs => o.timeout_seconds + \(lease))
        FROM picked JOIN slots USING (i) WHERE o.name = picked.name
        RETURNING o.name, o.worker, o.start, o.platform, o.platform_key,
          extract(epoch FROM now() - o.queued_at)::float8, o.attempts
        """, logger: logger
      ).decode((String, String, ByteBuffer, ByteBuffer, String, Double, Int).self) {
        var message = try StartAction(serializedBytes: Array(start.readableBytesView))
        message.operationName = name
        let properties = try Platform(serializedBytes: Array(platform.readableBytesView)).properties
        out.append(
          ClaimedAction(
            start: message, worker: worker, platform: properties, platformKey: key,
            queueWait: .milliseconds(Int64(waited * 1000)), attempts: attempts))
      }
      return out
    }
  }

  /// Queued actions and running ones, by platform key, with the oldest queued age.
  public func load() async throws(SchedulerError) -> [PlatformLoad] {
    let scheduler = self.scheduler
    return try await perform("reading the queue") { [client, logger] in
      var out: [PlatformLoad] = []
      for try await (key, queued, running, oldest) in try await client.query(
        """
        SELECT platform_key, count(*) FILTER (WHERE stage = 2), count(*) FILTER (WHERE stage = 3),
          extract(epoch FROM now() - min(queued_at) FILTER (WHERE stage = 2))::float8
        FROM apus_operations WHERE scheduler = \(scheduler) AND stage IN (2, 3) GROUP BY platform_key
        """, logger: logger
      ).decode((String, Int, Int, Double?).self) {
        out.append(
          PlatformLoad(key: key, queued: queued, running: running, oldestQueued: oldest.map { .milliseconds(Int64($0 * 1000)) }))
      }
      return out
    }
  }

  // MARK: - Results

  /// Records the result of `name` reported by `worker`. Accepted while the operation is
  /// unfinished, whoever runs it now: a late result from a worker whose lease ran out is
  /// still the action's result (the copy running elsewhere is then stopped by its
  /// scheduler, which hears of the change). A CANCELLED report (a killed copy) counts only
  /// from the worker the operation is assigned to. Returns whether it was accepted.
  public func finish(_ name: String, worker: String, _ response: ExecuteResponse) async throws(SchedulerError) -> Bool {
    let (scheduler, result) = (self.scheduler, Self.bytes(response))
    let late = response.status?.code != RPCStatusCode.cancelled.rawValue
    return try await perform("recording a result") { [client, logger] in
      try await !client.query(
        """
        UPDATE apus_operations SET stage = 4, response = \(result), completed_at = now(), worker = NULL
        WHERE scheduler = \(scheduler) AND name = \(name) AND stage <> 4 AND (worker = \(worker) OR \(late))
        RETURNING name
        """, logger: logger
      ).collect().isEmpty
    }
  }

  /// The worker gives the action back unrun (it is draining): queued again, no attempt
  /// counted.
  public func handBack(_ name: String, worker: String) async throws(SchedulerError) -> Bool {
    let scheduler = self.scheduler
    return try await perform("handing an action back") { [client, logger] in
      try await !client.query(
        """
        UPDATE apus_operations SET stage = 2, worker = NULL, assigned_at = NULL, execute_deadline = NULL
        WHERE scheduler = \(scheduler) AND name = \(name) AND stage = 3 AND worker = \(worker)
        RETURNING name
        """, logger: logger
      ).collect().isEmpty
    }
  }

  /// Fails a queued operation (e.g. no worker can run it); false if it was no longer queued.
  public func fail(_ name: String, _ response: ExecuteResponse) async throws(SchedulerError) -> Bool {
    let (scheduler, result) = (self.scheduler, Self.bytes(response))
    return try await perform("failing an action") { [client, logger] in
      try await !client.query(
        """
        UPDATE apus_operations SET stage = 4, response = \(result), completed_at = now()
        WHERE scheduler = \(scheduler) AND name = \(name) AND stage = 2 RETURNING name
        """, logger: logger
      ).collect().isEmpty
    }
  }

  // MARK: - Internals

  /// Runs one database step with the query timeout, mapping failures to UNAVAILABLE.
  ///
  /// The caller waits for the step's result, its timeout or its own cancellation, whichever
  /// comes first (`StatementRace`), never for the end of a step that outlived its timeout:
  /// that one is cancelled and left to end by itself. It runs as its own task, not a child
  /// of the caller, for that reason alone: a child would hold the caller until it ended.
  @discardableResult
  func perform<T: Sendable>(_ what: String, _ body: @escaping @Sendable () async throws -> T) async throws(
    SchedulerError
  ) -> T {
    let timeout = Duration.seconds(config.queryTimeoutSeconds)
    let race = StatementRace<T>()
    let (logger, database) = (self.logger, config.displayName)
    // Owned by this call: cancelled by the `defer` below when the call returns (result,
    // timeout or the caller's cancellation); it ends when postgres-nio ends the query, which
    // the cancellation asks for, or when the connection closes, and the pool shuts down
    // with the store's `run()`.
    let statement = Task {
      let began = ContinuousClock.now
      do {
        race.finish(.success(try await body()))
      } catch {
        race.finish(.failure(error))
      }
      let took = ContinuousClock.now - began
      if took > timeout + .seconds(1) {
        logger.warning(
          "a database step ended long after its timeout",
          metadata: ["database": "\(database)", "step": "\(what)", "seconds": "\(took.components.seconds)"])
      }
    }
    defer { statement.cancel() }
    do {
      let value = try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask {
          try await Task.sleep(for: timeout)
          logger.debug("no answer within the query timeout; cancelling", metadata: ["step": "\(what)"])
          race.finish(
            .failure(SchedulerError(.unavailable, "no answer within \(timeout.components.seconds)s (query_timeout_seconds)")))
        }
        defer { group.cancelAll() }
        return try await withTaskCancellationHandler {
          try await race.wait()
        } onCancel: {
          race.finish(.failure(CancellationError()))
        }
      }
      if health.succeeded() {
        logger.notice("the scheduler's database answers again", metadata: ["database": "\(config.displayName)"])
      }
      return value
    } catch let error as SchedulerError where error.code != .unavailable {
      health.succeeded()
      throw error
    } catch where error is CancellationError || Task.isCancelled {
      // The caller went away (a client hung up, shutdown): says nothing about the database.
      throw SchedulerError(.cancelled, "cancelled while \(what)")
    } catch {
      let reason = Self.describe(error)
      if health.failed(reason) {
        logger.error(
          "the scheduler's database is unavailable", metadata: ["database": "\(config.displayName)", "error": "\(reason)"])
      }
      throw SchedulerError(
        .unavailable, "the scheduler's database (PostgreSQL at \(config.displayName)) is unavailable while \(what): \(reason)")
    }
  }

  private func registerPlatform(_ key: PlatformKey) async throws(SchedulerError) {
    let (scheduler, bytes) = (self.scheduler, Self.platformBytes(key.properties))
    try await perform("registering a platform") { [client, logger] in
      try await client.query(
        """
        INSERT INTO apus_platforms (scheduler, platform_key, platform) VALUES (\(scheduler), \(key.rawValue), \(bytes))
        ON CONFLICT DO NOTHING
        """, logger: logger)
    }
  }

  /// What a failure says without the password or the query text.
  static func describe(_ error: any Error) -> String {
    if let e = error as? SchedulerError { return e.message }
    if let e = error as? PSQLError {
      if let message = e.serverInfo?[.message] {
        return "\(message) (SQLSTATE \(e.serverInfo?[.sqlState] ?? "?"))"
      }
      if let underlying = e.underlying { return "\(e.code): \(underlying)" }
      return "\(e.code)"
    }
    return "\(error)"
  }

  static func newName() -> String {
    "operations/" + String(UInt64.random(in: 0...UInt64.max), radix: 16)
      + String(UInt64.random(in: 0...UInt64.max), radix: 16)
  }

  /// What a worker is sent to run `job` (without the operation name, set when it is known).
  static func startAction(_ job: ExecutionJob, timeoutSeconds: Int64) -> StartAction {
    var start = StartAction()
    start.instanceName = job.instanceName
    start.actionDigest = job.actionDigest.proto
    start.action = job.action
    var timeout = ProtoDuration()
    timeout.seconds = timeoutSeconds
    start.timeout = timeout
    return start
  }

  /// The StartAction stored with a queued operation, as the claim hands it to a worker.
  static func start(_ job: ExecutionJob, timeoutSeconds: Int64) -> ByteBuffer {
    ByteBuffer(bytes: startAction(job, timeoutSeconds: timeoutSeconds).serializedBytes())
  }

  static func platformBytes(_ properties: [Platform.Property]) -> ByteBuffer {
    var platform = Platform()
    platform.properties = properties
    return ByteBuffer(bytes: platform.serializedBytes())
  }

  static func bytes(_ response: ExecuteResponse) -> ByteBuffer {
    ByteBuffer(bytes: response.serializedBytes())
  }

  static func digest(_ text: String) -> BlobDigest? {
    let parts = text.split(separator: "/")
    guard parts.count == 2, let size = Int64(parts[1]) else { return nil }
    return BlobDigest(hash: parts[0], sizeBytes: size)
  }

  /// An ExecuteResponse carrying only an error status.
  static func failure(_ code: RPCStatusCode, _ message: String) -> ExecuteResponse {
    var response = ExecuteResponse()
    response.status = RPCStatusMessage(code, message)
    return response
  }
}
