import ApusConfig
import ApusProto
import ApusScheduler
import Foundation
import Logging
import Synchronization
import Testing

@testable import ApusSchedulerPostgres

/// The database these tests use: `APUS_TEST_POSTGRES_URL`, which scripts/test.sh sets after
/// starting a real PostgreSQL (tests/postgres.py). Without it the suite is skipped.
let testDatabaseURL = ProcessInfo.processInfo.environment["APUS_TEST_POSTGRES_URL"]

/// Runs `body` with a migrated store whose rows are namespaced by a fresh scheduler name,
/// so tests share one database without seeing each other.
func withStore<T: Sendable>(
  scheduler: String = "t-\(UInt32.random(in: 0...UInt32.max))", leaseSeconds: Int = 30, maxJobRetries: Int = 3,
  url: String? = testDatabaseURL, queryTimeoutSeconds: Int = 5,
  _ body: @Sendable (PostgresSchedulerStore) async throws -> T
) async throws -> T {
  var config = try PostgresStateConfig.parse(try #require(url)).get()
  config.leaseSeconds = leaseSeconds
  config.queryTimeoutSeconds = queryTimeoutSeconds
  let store = try PostgresSchedulerStore(
    scheduler: scheduler, config: config, maxJobRetries: maxJobRetries, logger: Logger(label: "test"))
  return try await withThrowingTaskGroup(of: T?.self) { group in
    group.addTask {
      await store.run()
      return nil
    }
    defer { group.cancelAll() }
    try await store.migrate()
    return try await body(store)
  }
}

let rules = SchedulerConfig.defaultProperties

func job(_ seed: UInt8, platform: [(String, String)] = [], mergeable: Bool = true, priority: Int32 = 0) -> ExecutionJob {
  ExecutionJob(
    instanceName: "", actionDigest: BlobDigest(hashBytes: [UInt8](repeating: seed, count: 32), sizeBytes: 1),
    action: Action(),
    platform: platform.map { var p = Platform.Property(); p.name = $0.0; p.value = $0.1; return p },
    priority: priority, mergeable: mergeable)
}

func submit(_ store: PostgresSchedulerStore, _ job: ExecutionJob) async throws -> (name: String, merged: Bool) {
  try await store.submit(job, key: PlatformKey(job.platform, rules: rules), timeoutSeconds: 60)
}

func result(_ exitCode: Int32) -> ExecuteResponse {
  var r = ExecuteResponse()
  var a = ActionResult()
  a.exitCode = exitCode
  r.result = a
  return r
}

@Suite("PostgreSQL scheduler state", .enabled(if: testDatabaseURL != nil), .timeLimit(.minutes(3)))
struct PostgresSchedulerStoreTests {
  @Test("five processes migrating at once apply each migration once")
  func concurrentMigration() async throws {
    try await withThrowingTaskGroup(of: Void.self) { group in
      for _ in 0..<5 { group.addTask { try await withStore { _ in } } }
      try await group.waitForAll()
    }
    let versions = try await withStore { store in
      try await store.client.query("SELECT version FROM apus_schema_version ORDER BY version").collect().map {
        try $0.decode(Int.self)
      }
    }
    #expect(versions == Array(1...SchedulerSchema.currentVersion))
  }

  @Test("identical mergeable actions from two processes share one operation; do_not_cache ones do not")
  func merging() async throws {
    let name = "merge-\(UInt32.random(in: 0...UInt32.max))"
    let a = try await withStore(scheduler: name) { try await submit($0, job(1)) }
    let (b, c) = try await withStore(scheduler: name) { store in
      (try await submit(store, job(1)), try await submit(store, job(1, mergeable: false)))
    }
    #expect(a.merged == false && b.merged && b.name == a.name)
    #expect(c.merged == false && c.name != a.name)
  }

  @Test("an operation is queued, claimed, finished, and then a new identical action is a new operation")
  func lifecycle() async throws {
    try await withStore { store in
      let (name, _) = try await submit(store, job(2, platform: [("OSFamily", "linux")]))
      var op = try #require(await store.operation(name))
      #expect(op.stage == .queued && op.response == nil && op.operation.done == false)
      #expect(op.actionDigest == job(2).actionDigest)
      let keys = try await store.platformKeys(rules: rules)
      #expect(keys.map(\.description) == ["OSFamily=linux"])
      try await store.registerWorker("w1")
      let claimed = try await store.claim(worker: "w1", keys: keys, limit: 4)
      #expect(claimed.map(\.start.operationName) == [name])
      #expect(claimed.first?.start.timeout?.seconds == 60)
      #expect(try await store.operation(name)?.stage == .executing)
      // A killed copy elsewhere reports CANCELLED: that is not the action's result.
      var cancelled = ExecuteResponse()
      cancelled.status = RPCStatusMessage(.cancelled, "the action was cancelled")
      #expect(try await store.finish(name, worker: "w2", cancelled) == false)
      #expect(try await store.finish(name, worker: "w1", result(7)))
      op = try #require(await store.operation(name))
      #expect(op.stage == .completed && op.response?.result?.exitCode == 7 && op.operation.done)
      #expect(try await store.finish(name, worker: "w1", result(8)) == false)
      let again = try await submit(store, job(2, platform: [("OSFamily", "linux")]))
      #expect(again.merged == false && again.name != name)
    }
  }

  @Test("claims go by priority then age, only from the keys given")
  func claimOrder() async throws {
    try await withStore { store in
      let low = try await submit(store, job(3, priority: 5)).name
      let first = try await submit(store, job(4)).name
      let second = try await submit(store, job(5)).name
      let windows = try await submit(store, job(6, platform: [("OSFamily", "windows")])).name
      try await store.registerWorker("w")
      let linux = PlatformKey([], rules: rules)
      let claimed = try await store.claim(worker: "w", keys: [linux], limit: 10).map(\.start.operationName)
      #expect(claimed == [first, second, low])
      #expect(try await store.operation(windows)?.stage == .queued)
    }
  }

  @Test("an Execute for a free worker is inserted executing on it, unless work it could run is queued or it merges")
  func directInsert() async throws {
    try await withStore { store in
      let linux = PlatformKey([], rules: rules)
      try await store.registerWorker("w")
      func direct(_ j: ExecutionJob, to worker: String?) async throws -> PostgresSchedulerStore.Submitted {
        try await store.submit(
          j, name: PostgresSchedulerStore.newName(), key: linux, timeoutSeconds: 60, registerKey: true,
          directTo: worker, ahead: [linux])
      }
      let first = try await direct(job(40), to: "w")
      #expect(first.direct && !first.merged)
      let op = try #require(await store.operation(first.name))
      #expect(op.stage == .executing && op.worker == "w")
      // Its platform is registered and nothing was queued: no claim finds it again.
      #expect(try await store.platformKeys(rules: rules) == [linux])
      #expect(try await store.claim(worker: "w", keys: [linux], limit: 5).isEmpty)
      // The same action again joins it rather than running twice.
      let merged = try await direct(job(40), to: "w2")
      #expect(merged.merged && !merged.direct && merged.name == first.name)
      // With work queued that the worker could run, a new action waits its turn behind it.
      let queued = try await direct(job(41), to: nil)
      let queuedStage = try await store.operation(queued.name)?.stage
      #expect(!queued.direct && queuedStage == .queued)
      let behind = try await direct(job(42), to: "w2")
      let behindStage = try await store.operation(behind.name)?.stage
      #expect(!behind.direct && behindStage == .queued)
      let claimed = try await store.claim(worker: "w2", keys: [linux], limit: 1).map(\.start.operationName)
      #expect(claimed == [queued.name])
      // A result for the directly started one is accepted from its worker.
      #expect(try await store.finish(first.name, worker: "w", result(0)))
    }
  }

  @Test("two processes claiming at once never take the same action")
  func skipLocked() async throws {
    let name = "claim-\(UInt32.random(in: 0...UInt32.max))"
    let submitted = try await withStore(scheduler: name) { store in
      var names: Set<String> = []
      for seed in 0..<60 { names.insert(try await submit(store, job(UInt8(seed), mergeable: false)).name) }
      return names
    }
    let taken = try await withThrowingTaskGroup(of: [String].self) { group in
      for worker in ["a", "b", "c"] {
        group.addTask {
          try await withStore(scheduler: name) { store in
            try await store.registerWorker(worker)
            var mine: [String] = []
            while true {
              let batch = try await store.claim(worker: worker, keys: [PlatformKey([], rules: rules)], limit: 3)
              if batch.isEmpty { return mine }
              mine += batch.map(\.start.operationName)
            }
          }
        }
      }
      return try await group.reduce(into: [String]()) { $0 += $1 }
    }
    #expect(taken.count == 60)
    #expect(Set(taken) == submitted)
  }

  @Test("an expired lease queues the action again with an attempt counted, then fails it past the retry limit")
  func leases() async throws {
    try await withStore(leaseSeconds: 1, maxJobRetries: 1) { store in
      let name = try await submit(store, job(7)).name
      let key = [PlatformKey([], rules: rules)]
      try await store.registerWorker("w")
      #expect(try await store.claim(worker: "w", keys: key, limit: 1).count == 1)
      #expect(try await store.requeueOrphans().isEmpty)
      try await Task.sleep(for: .milliseconds(1500))
      let first = try await store.requeueOrphans()
      #expect(first.map(\.name) == [name] && first.map(\.failed) == [false])
      #expect(try await store.operation(name)?.stage == .queued)
      // A renewed lease keeps the action assigned.
      try await store.registerWorker("w2")
      let claimed = try #require(await store.claim(worker: "w2", keys: key, limit: 1).first)
      #expect(claimed.attempts == 1)
      try await Task.sleep(for: .milliseconds(700))
      try await store.renewLeases(["w2"])
      try await Task.sleep(for: .milliseconds(700))
      #expect(try await store.requeueOrphans().isEmpty)
      try await store.releaseWorker("w2", graceSeconds: 0)
      let second = try await store.requeueOrphans()
      #expect(second.map(\.failed) == [true])
      let op = try #require(await store.operation(name))
      #expect(op.stage == .completed && op.response?.status?.code == RPCStatusCode.unavailable.rawValue)
      #expect(op.response?.status?.message.contains("max_job_retries (1)") == true)
    }
  }

  @Test("a late result from a worker whose action was queued again is accepted")
  func lateResult() async throws {
    try await withStore(leaseSeconds: 1) { store in
      let name = try await submit(store, job(8)).name
      try await store.registerWorker("w")
      _ = try await store.claim(worker: "w", keys: [PlatformKey([], rules: rules)], limit: 1)
      try await store.releaseWorker("w", graceSeconds: 0)
      #expect(try await store.requeueOrphans().count == 1)
      #expect(try await store.finish(name, worker: "w", result(0)))
      #expect(try await store.operation(name)?.stage == .completed)
    }
  }

  @Test("handing back requeues without an attempt; cancel reports the worker to stop")
  func handBackAndCancel() async throws {
    try await withStore { store in
      let name = try await submit(store, job(9)).name
      let key = [PlatformKey([], rules: rules)]
      try await store.registerWorker("w")
      _ = try await store.claim(worker: "w", keys: key, limit: 1)
      #expect(try await store.handBack(name, worker: "w"))
      let again = try #require(await store.claim(worker: "w", keys: key, limit: 1).first)
      #expect(again.attempts == 0)
      let cancelled = try await store.cancel(name)
      #expect(cancelled.found && cancelled.worker == "w")
      #expect(try await store.operation(name)?.response?.status?.code == RPCStatusCode.cancelled.rawValue)
      #expect(try await store.cancel(name).worker == nil)
      #expect(try await store.cancel("operations/none").found == false)
    }
  }

  @Test("cached results are recorded as finished operations; old ones are purged")
  func recordedAndPurged() async throws {
    try await withStore { store in
      let name = try await store.recordCompleted(job(10), key: PlatformKey([], rules: rules), result(3))
      #expect(try await store.operation(name)?.response?.result?.exitCode == 3)
      #expect(try await store.purge(completedBefore: 3600) == 0)
      try await Task.sleep(for: .milliseconds(1100))
      #expect(try await store.purge(completedBefore: 1) == 1)
      #expect(try await store.operation(name) == nil)
    }
  }

  @Test("queue load is counted per platform key")
  func load() async throws {
    try await withStore { store in
      for seed in 20..<23 { _ = try await submit(store, job(UInt8(seed), platform: [("OSFamily", "linux")])) }
      _ = try await submit(store, job(30))
      try await store.registerWorker("w")
      _ = try await store.claim(worker: "w", keys: [PlatformKey([], rules: rules)], limit: 1)
      let load = try await store.load().sorted { $0.key < $1.key }
      #expect(load.map(\.key) == ["", "OSFamily=linux"])
      #expect(load.map(\.queued) == [0, 3] && load.map(\.running) == [1, 0])
      #expect(load[1].oldestQueued != nil && load[0].oldestQueued == nil)
    }
  }

  @Test("changes are announced by operation name, and new work by scheduler")
  func notifications() async throws {
    try await withStore { store in
      let seen = Changes()
      let listener = Task { await store.listen { seen.append($0) } }
      try await waitUntil { seen.contains(.resubscribed) }
      let name = try await submit(store, job(11)).name
      try await store.registerWorker("w")
      _ = try await store.claim(worker: "w", keys: [PlatformKey([], rules: rules)], limit: 1)
      try await waitUntil { seen.contains(.operation(name)) }
      listener.cancel()
      await listener.value
      #expect(seen.contains(.queued) && seen.contains(.operation(name)))
    }
  }
}

/// What a listener heard, read by the test.
final class Changes: Sendable {
  private let all = Mutex<[StateChange]>([])
  func append(_ change: StateChange) { all.withLock { $0.append(change) } }
  func contains(_ change: StateChange) -> Bool { all.withLock { $0.contains(change) } }
}

/// Polls `condition` every 20 ms for up to 20 s.
func waitUntil(_ condition: () -> Bool) async throws {
  let deadline = ContinuousClock.now + .seconds(20)
  while !condition() && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
}

@Suite("PostgreSQL scheduler state, database down", .timeLimit(.minutes(2)))
struct PostgresUnavailableTests {
  @Test("a database that does not answer is UNAVAILABLE naming it, and readiness says why")
  func unavailable() async throws {
    // A port nothing listens on (bound, then closed).
    let url = "postgres://apus:secret@127.0.0.1:1/apus?sslmode=disable"
    var config = try PostgresStateConfig.parse(url).get()
    config.queryTimeoutSeconds = 2
    let store = try PostgresSchedulerStore(scheduler: "down", config: config, maxJobRetries: 3, logger: Logger(label: "test"))
    await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask { await store.run() }
      defer { group.cancelAll() }
      let started = ContinuousClock.now
      do {
        _ = try await submit(store, job(1))
        Issue.record("submit succeeded without a database")
      } catch let error as SchedulerError {
        #expect(error.code == .unavailable)
        #expect(error.message.contains("PostgreSQL at 127.0.0.1:1/apus"))
        #expect(!error.message.contains("secret"))
      } catch {
        Issue.record("unexpected error \(error)")
      }
      #expect(ContinuousClock.now - started < .seconds(10))
      #expect(store.health.unavailableReason != nil)
    }
  }
}
