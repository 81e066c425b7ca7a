import ApusProto
import ApusScheduler
import NIOCore
import PostgresNIO

/// Worker leases: a worker's actions stay assigned while its lease lives. The scheduler
/// process holding the worker's stream owns the lease and renews it; when that process dies
/// or the worker stays away, the lease runs out and the sweeper queues its actions again
/// (counting an attempt) or fails them past `max_job_retries`.
extension PostgresSchedulerStore {
  /// Takes (or takes over) the lease of `worker` for this process: a worker reconnecting to
  /// another scheduler keeps its running actions.
  /// Its properties are kept with the lease, so every process can tell whether any live
  /// worker could run a queued platform.
  public func registerWorker(_ worker: String, properties: [Platform.Property] = []) async throws(SchedulerError) {
    let (scheduler, owner, lease) = (self.scheduler, self.owner, config.leaseSeconds)
    let offered = Self.platformBytes(properties)
    try await perform("registering a worker") { [client, logger] in
      try await client.query(
        """
        INSERT INTO apus_workers (scheduler, id, owner, expires, properties)
        VALUES (\(scheduler), \(worker), \(owner), now() + make_interval(secs => \(lease)), \(offered))
        ON CONFLICT (scheduler, id) DO UPDATE SET owner = EXCLUDED.owner, expires = EXCLUDED.expires,
          properties = EXCLUDED.properties
        """, logger: logger)
    }
  }

  /// What every worker with a live lease offers (any process's).
  public func liveWorkers() async throws(SchedulerError) -> [[String: [String]]] {
    let scheduler = self.scheduler
    return try await perform("reading the fleet") { [client, logger] in
      var out: [[String: [String]]] = []
      for try await bytes in try await client.query(
        "SELECT properties FROM apus_workers WHERE scheduler = \(scheduler) AND expires > now()", logger: logger
      ).decode(ByteBuffer.self) {
        let platform = try Platform(serializedBytes: Array(bytes.readableBytesView))
        out.append(platform.properties.reduce(into: [:]) { $0[$1.name, default: []].append($1.value) })
      }
      return out
    }
  }

  /// Fails the actions of `key` queued for longer than `seconds` (no live worker can run
  /// them); returns how many.
  public func failQueued(key: String, olderThan seconds: Int, _ response: ExecuteResponse) async throws(SchedulerError)
    -> Int
  {
    let (scheduler, result) = (self.scheduler, Self.bytes(response))
    return try await perform("failing unrunnable actions") { [client, logger] in
      try await client.query(
        """
        UPDATE apus_operations SET stage = 4, response = \(result), completed_at = now()
        WHERE scheduler = \(scheduler) AND stage = 2 AND platform_key = \(key)
          AND queued_at < now() - make_interval(secs => \(seconds))
        RETURNING name
        """, logger: logger
      ).collect().count
    }
  }

  /// Queued actions per instance (for `max_queued_actions`).
  public func queuedPerInstance() async throws(SchedulerError) -> [String: Int] {
    let scheduler = self.scheduler
    return try await perform("counting queued actions") { [client, logger] in
      var out: [String: Int] = [:]
      for try await (instance, count) in try await client.query(
        "SELECT instance, count(*) FROM apus_operations WHERE scheduler = \(scheduler) AND stage = 2 GROUP BY instance",
        logger: logger
      ).decode((String, Int).self) {
        out[instance] = count
      }
      return out
    }
  }

  /// For a worker registering (again): of the actions assigned to it, those it lists as
  /// still running stay its own and are returned with their platform keys; the others are
  /// queued again at once (an attempt counted, failed past `max_job_retries`).
  public func adoptRunning(worker: String, listed: [String]) async throws(SchedulerError) -> [(String, String)] {
    let (scheduler, max) = (self.scheduler, maxJobRetries)
    let failure = Self.bytes(
      Self.failure(.unavailable, "the action's worker was lost more than max_job_retries (\(max)) times; giving up"))
    return try await perform("adopting a worker's running actions") { [client, logger] in
      try await client.query(
        """
        UPDATE apus_operations o SET attempts = o.attempts + 1,
          stage = CASE WHEN o.attempts + 1 > \(max) THEN 4 ELSE 2 END,
          response = CASE WHEN o.attempts + 1 > \(max) THEN \(failure) END,
          completed_at = CASE WHEN o.attempts + 1 > \(max) THEN now() END,
          worker = NULL, assigned_at = NULL, execute_deadline = NULL
        WHERE o.scheduler = \(scheduler) AND o.stage = 3 AND o.worker = \(worker) AND NOT (o.name = ANY(\(listed)))
        """, logger: logger)
      var kept: [(String, String)] = []
      for try await (name, key) in try await client.query(
        """
        SELECT name, platform_key FROM apus_operations WHERE scheduler = \(scheduler) AND stage = 3 AND worker = \(worker)
        """, logger: logger
      ).decode((String, String).self) {
        kept.append((name, key))
      }
      return kept
    }
  }

  /// Extends the leases of the workers connected to this process (one statement for all).
  public func renewLeases(_ workers: [String]) async throws(SchedulerError) {
    guard !workers.isEmpty else { return }
    let (scheduler, owner, lease) = (self.scheduler, self.owner, config.leaseSeconds)
    try await perform("renewing worker leases") { [client, logger] in
      try await client.query(
        """
        UPDATE apus_workers SET expires = now() + make_interval(secs => \(lease))
        WHERE scheduler = \(scheduler) AND owner = \(owner) AND id = ANY(\(workers))
        """, logger: logger)
    }
  }

  /// Lets the lease of a worker whose stream ended run out after `graceSeconds` (0: at
  /// once), unless the worker registers again first.
  public func releaseWorker(_ worker: String, graceSeconds: Int) async throws(SchedulerError) {
    let (scheduler, owner) = (self.scheduler, self.owner)
    try await perform("releasing a worker") { [client, logger] in
      try await client.query(
        """
        UPDATE apus_workers SET expires = least(expires, now() + make_interval(secs => \(graceSeconds)))
        WHERE scheduler = \(scheduler) AND id = \(worker) AND owner = \(owner)
        """, logger: logger)
    }
  }

  /// Queues again the executing actions whose worker's lease ran out (or that outlived
  /// their timeout plus a lease), failing those lost more than `max_job_retries` times.
  /// Returns the operations touched and whether each was failed. Safe to run from every
  /// process at once: rows are claimed with `SKIP LOCKED`.
  public func requeueOrphans() async throws(SchedulerError) -> [(name: String, failed: Bool)] {
    let (scheduler, max) = (self.scheduler, maxJobRetries)
    let failure = Self.bytes(
      Self.failure(.unavailable, "the action's worker was lost more than max_job_retries (\(max)) times; giving up"))
    return try await perform("requeueing actions of lost workers") { [client, logger] in
      var out: [(String, Bool)] = []
      for try await (name, stage) in try await client.query(
        """
        WITH lost AS (
          SELECT o.name FROM apus_operations o
          WHERE o.scheduler = \(scheduler) AND o.stage = 3 AND (o.execute_deadline < now() OR NOT EXISTS (
            SELECT 1 FROM apus_workers w WHERE w.scheduler = o.scheduler AND w.id = o.worker AND w.expires > now()))
          FOR UPDATE SKIP LOCKED)
        UPDATE apus_operations o SET attempts = o.attempts + 1,
          stage = CASE WHEN o.attempts + 1 > \(max) THEN 4 ELSE 2 END,
          response = CASE WHEN o.attempts + 1 > \(max) THEN \(failure) END,
          completed_at = CASE WHEN o.attempts + 1 > \(max) THEN now() END,
          worker = NULL, assigned_at = NULL, execute_deadline = NULL
        FROM lost WHERE o.name = lost.name
        RETURNING o.name, o.stage
        """, logger: logger
      ).decode((String, Int16).self) {
        out.append((name, stage == 4))
      }
      return out
    }
  }

  /// Deletes finished operations older than `seconds` and worker leases expired an hour
  /// ago; returns how many operations went.
  public func purge(completedBefore seconds: Int) async throws(SchedulerError) -> Int {
    let scheduler = self.scheduler
    return try await perform("forgetting old operations") { [client, logger] in
      try await client.query(
        """
        DELETE FROM apus_workers WHERE scheduler = \(scheduler) AND expires < now() - interval '1 hour'
        """, logger: logger)
      // Bounded per sweep, so a backlog never makes one long statement.
      return try await client.query(
        """
        DELETE FROM apus_operations WHERE name IN (
          SELECT name FROM apus_operations WHERE scheduler = \(scheduler) AND stage = 4
            AND completed_at < now() - make_interval(secs => \(seconds)) LIMIT 10000)
        RETURNING name
        """, logger: logger
      ).collect().count
    }
  }

  /// One round trip, so an idle process still notices an outage and its end.
  public func ping() async throws(SchedulerError) {
    try await perform("checking the connection") { [client, logger] in
      try await client.query("SELECT 1", logger: logger)
    }
  }
}
