import ApusScheduler
import Logging
import PostgresNIO

/// The tables Apus keeps in PostgreSQL, and the migrations that create them.
///
/// Versioned: `apus_schema_version` holds one row per applied migration. Every scheduler
/// process migrates at start inside one transaction holding a transaction-level advisory
/// lock, so several processes starting at once apply each migration exactly once, and a
/// failed migration leaves nothing behind (PostgreSQL DDL is transactional). A database
/// migrated by a newer Apus is refused rather than written with the wrong assumptions.
public enum SchedulerSchema {
  /// Arbitrary, fixed: the advisory lock every Apus process takes to migrate.
  static let migrationLock: Int64 = 0x4170_7573_5363_6831  // "ApusSch1"

  /// Each migration's statements, in order; index + 1 is its version. Append only.
  static let migrations: [[String]] = [
    [
      """
      CREATE TABLE apus_operations (
        name text PRIMARY KEY,
        scheduler text NOT NULL,
        instance text NOT NULL,
        action_digest text NOT NULL,
        mergeable boolean NOT NULL,
        platform_key text NOT NULL,
        priority integer NOT NULL,
        seq bigint GENERATED ALWAYS AS IDENTITY,
        stage smallint NOT NULL,
        start bytea NOT NULL,
        platform bytea NOT NULL,
        timeout_seconds bigint NOT NULL,
        response bytea,
        attempts integer NOT NULL DEFAULT 0,
        worker text,
        execute_deadline timestamptz,
        queued_at timestamptz NOT NULL DEFAULT now(),
        assigned_at timestamptz,
        completed_at timestamptz
      )
      """,
      // At most one unfinished mergeable operation per action: the merge across schedulers.
      """
      CREATE UNIQUE INDEX apus_operations_in_flight ON apus_operations (scheduler, instance, action_digest)
        WHERE mergeable AND stage <> 4
      """,
      "CREATE INDEX apus_operations_queue ON apus_operations (scheduler, platform_key, priority, seq) WHERE stage = 2",
      "CREATE INDEX apus_operations_running ON apus_operations (scheduler, worker) WHERE stage = 3",
      "CREATE INDEX apus_operations_completed ON apus_operations (scheduler, completed_at) WHERE stage = 4",
      """
      CREATE TABLE apus_platforms (
        scheduler text NOT NULL,
        platform_key text NOT NULL,
        platform bytea NOT NULL,
        PRIMARY KEY (scheduler, platform_key)
      )
      """,
      """
      CREATE TABLE apus_workers (
        scheduler text NOT NULL,
        id text NOT NULL,
        owner text NOT NULL,
        expires timestamptz NOT NULL,
        properties bytea NOT NULL,
        PRIMARY KEY (scheduler, id)
      )
      """,
      // Watchers hear of every stage change by operation name; dispatchers of new queued
      // work by scheduler name. Sent by the database at commit, so nothing is announced
      // that was rolled back.
      """
      CREATE FUNCTION apus_operations_notify() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF TG_OP = 'UPDATE' THEN
          PERFORM pg_notify('apus_operations', NEW.name);
        END IF;
        IF NEW.stage = 2 THEN
          PERFORM pg_notify('apus_queue', NEW.scheduler);
        END IF;
        RETURN NULL;
      END
      $$
      """,
      """
      CREATE TRIGGER apus_operations_changed AFTER INSERT OR UPDATE OF stage ON apus_operations
        FOR EACH ROW EXECUTE FUNCTION apus_operations_notify()
      """,
    ]
  ]

  /// The version this build writes.
  public static var currentVersion: Int { migrations.count }

  /// Brings the database to `currentVersion`; returns the version found before.
  @discardableResult
  public static func migrate(_ client: PostgresClient, logger: Logger) async throws -> Int {
    try await client.withTransaction(logger: logger) { connection in
      try await connection.query("SELECT pg_advisory_xact_lock(\(migrationLock))", logger: logger)
      try await connection.query(
        """
        CREATE TABLE IF NOT EXISTS apus_schema_version (
          version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())
        """, logger: logger)
      var found = 0
      for try await version in try await connection.query(
        "SELECT coalesce(max(version), 0) FROM apus_schema_version", logger: logger
      ).decode(Int.self) {
        found = version
      }
      guard found <= currentVersion else {
        throw SchedulerError(
          .failedPrecondition,
          "the scheduler's database has schema version \(found), newer than this Apus knows (\(currentVersion)); run the newer Apus")
      }
      for version in (found + 1)..<(currentVersion + 1) {
        for statement in migrations[version - 1] {
          try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
        }
        try await connection.query("INSERT INTO apus_schema_version (version) VALUES (\(version))", logger: logger)
        logger.info("scheduler schema migrated", metadata: ["version": "\(version)"])
      }
      return found
    }
  }
}
