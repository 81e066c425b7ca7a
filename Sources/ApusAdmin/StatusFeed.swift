import ApusScheduler

/// The `/status` JSON, schema version 1 (docs/operations.md). Fields are only added within
/// a version; a change of meaning bumps `schema_version`.
struct StatusFeed: Encodable, Sendable {
  struct Platform: Encodable, Sendable {
    var platform: [String: String]
    var queued: Int
    var running: Int
    var oldestQueuedSeconds: Double?
    var slotsPerWorker: Double?
    var desiredWorkers: Int

    enum CodingKeys: String, CodingKey {
      case platform, queued, running
      case oldestQueuedSeconds = "oldest_queued_seconds"
      case slotsPerWorker = "slots_per_worker"
      case desiredWorkers = "desired_workers"
    }
  }

  struct ConnectedWorker: Encodable, Sendable {
    var id: String
    var platform: [String: [String]]
    var slots: Int
    var busy: Int
    var draining: Bool
    var lastKeepaliveSeconds: Double

    enum CodingKeys: String, CodingKey {
      case id, platform, slots, busy, draining
      case lastKeepaliveSeconds = "last_keepalive_seconds"
    }
  }

  struct Scheduler: Encodable, Sendable {
    var queued: Int
    var running: Int
    var oldestQueuedSeconds: Double?
    var slots: Int
    var busy: Int
    var desiredWorkers: Int
    var platforms: [Platform]
    var workers: [ConnectedWorker]

    enum CodingKeys: String, CodingKey {
      case queued, running, slots, busy, platforms, workers
      case oldestQueuedSeconds = "oldest_queued_seconds"
      case desiredWorkers = "desired_workers"
    }

    init(_ s: SchedulerSnapshot) {
      queued = s.queued
      running = s.running
      oldestQueuedSeconds = s.oldestQueued.map(seconds)
      slots = s.slots
      busy = s.busy
      desiredWorkers = s.desiredWorkers
      platforms = s.platforms.map {
        Platform(
          platform: $0.platform, queued: $0.queued, running: $0.running,
          oldestQueuedSeconds: $0.oldestQueued.map(seconds), slotsPerWorker: $0.slotsPerWorker,
          desiredWorkers: $0.desiredWorkers)
      }
      workers = s.workers.map {
        ConnectedWorker(
          id: $0.id, platform: $0.properties, slots: $0.slots, busy: $0.busy, draining: $0.draining,
          lastKeepaliveSeconds: seconds($0.sinceKeepAlive))
      }
    }
  }

  struct Usage: Encodable, Sendable {
    var entries: Int
    var bytes: Int64
  }

  struct Lookups: Encodable, Sendable {
    var hits: Int
    var misses: Int
  }

  struct LocalWorker: Encodable, Sendable {
    var id: String
    var scheduler: String
    var registered: Bool
    var slots: Int
    var busy: Int
    var draining: Bool
  }

  struct Calls: Encodable, Sendable {
    var requests: Int
    var errors: Int
  }

  struct Problem: Encodable, Sendable {
    var time: String
    var level: String
    var message: String
    var metadata: [String: String]
  }

  var schemaVersion = 1
  var version: String
  var uptimeSeconds: Double
  var roles: [String]
  var ready: Bool
  var draining: Bool
  var schedulers: [String: Scheduler]
  var stores: [String: Usage]
  var actionCache: [String: Lookups]
  var workers: [LocalWorker]
  var grpc: Calls
  var recentErrors: [Problem]

  enum CodingKeys: String, CodingKey {
    case version, roles, ready, draining, schedulers, stores, workers, grpc
    case schemaVersion = "schema_version"
    case uptimeSeconds = "uptime_seconds"
    case actionCache = "action_cache"
    case recentErrors = "recent_errors"
  }
}

/// Seconds with millisecond precision, as JSON numbers.
func seconds(_ d: Duration) -> Double {
  ((Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18) * 1000).rounded() / 1000
}
