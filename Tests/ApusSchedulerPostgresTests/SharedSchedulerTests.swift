import ApusConfig
import ApusProto
import ApusScheduler
import Logging
import Synchronization
import Testing

@testable import ApusSchedulerPostgres

/// A fake worker connection: records what a scheduler sends.
final class Inbox: Sendable {
  let messages = Mutex<[SchedulerMessage]>([])
  var send: @Sendable (SchedulerMessage) -> Void { { m in self.messages.withLock { $0.append(m) } } }
  var started: [String] { messages.withLock { $0.compactMap { $0.start?.operationName } } }
  var killed: [String] { messages.withLock { $0.compactMap { $0.kill?.operationName } } }
}

/// Runs `body` with `count` shared schedulers on one database (one scheduler name), each
/// with its loops running, as separate processes would.
func withSchedulers<T: Sendable>(
  _ count: Int, config: SchedulerConfig = SchedulerConfig(), leaseSeconds: Int = 30,
  _ body: @Sendable ([SharedScheduler]) async throws -> T
) async throws -> T {
  var pg = try PostgresStateConfig.parse(try #require(testDatabaseURL)).get()
  pg.leaseSeconds = leaseSeconds
  pg.pollIntervalMilliseconds = 200
  let name = "shared-\(UInt32.random(in: 0...UInt32.max))"
  let schedulers = try (0..<count).map { _ in
    try SharedScheduler(name: name, config: config, postgres: pg, logger: Logger(label: "test"))
  }
  return try await withThrowingTaskGroup(of: T?.self) { group in
    for s in schedulers { group.addTask { await s.run(); return nil } }
    defer { group.cancelAll() }
    // Ready once each has migrated and answers.
    for s in schedulers {
      try await waitUntilAsync { (try? await s.store.platformKeys(rules: s.config.platformProperties)) != nil }
    }
    return try await body(schedulers)
  }
}

/// Polls `condition` every 20 ms for up to 20 s.
func waitUntilAsync(_ condition: () async -> Bool) async throws {
  let deadline = ContinuousClock.now + .seconds(20)
  while await !condition() && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
}

func props(_ pairs: [(String, String)]) -> [Platform.Property] {
  pairs.map { var p = Platform.Property(); p.name = $0.0; p.value = $0.1; return p }
}

func finished(_ name: String, exitCode: Int32 = 0) -> ActionFinished {
  var f = ActionFinished()
  f.operationName = name
  f.response = result(exitCode)
  return f
}

/// The status code `body` failed with; nil if it succeeded.
func code(_ body: () async throws -> Void) async -> RPCStatusCode? {
  do {
    try await body()
    return nil
  } catch let error as SchedulerError {
    return error.code
  } catch {
    return .unknown
  }
}

@Suite("Shared scheduler", .enabled(if: testDatabaseURL != nil), .timeLimit(.minutes(3)))
struct SharedSchedulerTests {
  @Test("an action submitted to one process runs on a worker of another; a watcher on the first sees the result")
  func acrossProcesses() async throws {
    try await withSchedulers(2) { s in
      let name = try await s[0].submit(job(1, platform: [("OSFamily", "linux")]))
      let stream = try #require(await s[0].watch(name))
      let inbox = Inbox()
      try await s[1].registerWorker(
        id: "w", properties: props([("OSFamily", "linux")]), capacity: 1, runningOperations: [], send: inbox.send)
      try await waitUntil { inbox.started == [name] }
      #expect(inbox.started == [name])
      await s[1].finished("w", finished(name, exitCode: 4))
      var last: Operation?
      for await op in stream { last = op }
      #expect(last?.done == true)
      let op = try #require(await s[0].operation(name))
      #expect(op.done)
      #expect(try await s[1].instanceName(ofOperation: name) == "")
    }
  }

  @Test("an Execute taken by the process of a free worker starts on it before submit returns; a cancel elsewhere stops it")
  func directStart() async throws {
    try await withSchedulers(2) { s in
      let inbox = Inbox()
      try await s[0].registerWorker(id: "w", properties: [], capacity: 1, runningOperations: [], send: inbox.send)
      let name = try await s[0].submit(job(20))
      #expect(inbox.started == [name])
      let stored = try #require(await s[0].store.operation(name))
      #expect(stored.stage == .executing && stored.worker == "w")
      // The watch that follows answers from what was committed, and hears of later changes.
      let stream = try #require(await s[0].watch(name))
      #expect(try await s[1].cancel(name))
      try await waitUntil { inbox.killed == [name] }
      var last: Operation?
      for await op in stream { last = op }
      #expect(last?.done == true)
      // The killed copy's report changes nothing; the slot is free for the next action.
      await s[0].finished("w", finished(name))
      let next = try await s[0].submit(job(21))
      try await waitUntil { inbox.started.contains(next) }
      #expect(inbox.started == [name, next])
    }
  }

  @Test("identical actions merge across processes; minimum properties reserve across claims")
  func mergeAndReserve() async throws {
    try await withSchedulers(2) { s in
      let a = try await s[0].submit(job(2, platform: [("cpu_count", "2")]))
      let b = try await s[1].submit(job(2, platform: [("cpu_count", "2")]))
      #expect(a == b)
      let c = try await s[1].submit(job(3, platform: [("cpu_count", "2")]))
      let inbox = Inbox()
      // 3 CPUs: one 2-CPU action at a time, although it has 4 slots.
      try await s[0].registerWorker(
        id: "w", properties: props([("cpu_count", "3")]), capacity: 4, runningOperations: [], send: inbox.send)
      try await waitUntil { inbox.started.count == 1 }
      try await Task.sleep(for: .milliseconds(500))
      #expect(inbox.started.count == 1)
      await s[0].finished("w", finished(inbox.started[0]))
      try await waitUntil { inbox.started.count == 2 }
      #expect(Set(inbox.started) == [a, c])
    }
  }

  @Test("cancelling on one process kills the action on the worker of another")
  func cancelAcross() async throws {
    try await withSchedulers(2) { s in
      let name = try await s[0].submit(job(4))
      let inbox = Inbox()
      try await s[1].registerWorker(id: "w", properties: [], capacity: 1, runningOperations: [], send: inbox.send)
      try await waitUntil { inbox.started == [name] }
      #expect(try await s[0].cancel(name))
      try await waitUntil { inbox.killed == [name] }
      #expect(inbox.killed == [name])
      let op = try #require(await s[1].operation(name))
      #expect(op.done)
      // The killed copy's CANCELLED report changes nothing and frees the slot.
      var report = ActionFinished()
      report.operationName = name
      report.response = PostgresSchedulerStore.failure(.cancelled, "the action was cancelled")
      await s[1].finished("w", report)
      let next = try await s[0].submit(job(5))
      try await waitUntil { inbox.started.contains(next) }
      #expect(inbox.started.contains(next))
    }
  }

  @Test("a worker reconnecting to another process keeps the actions it lists; the rest are requeued")
  func reconnect() async throws {
    try await withSchedulers(2) { s in
      let first = try await s[0].submit(job(6, mergeable: false))
      let second = try await s[0].submit(job(7, mergeable: false))
      let before = Inbox()
      try await s[0].registerWorker(id: "w", properties: [], capacity: 2, runningOperations: [], send: before.send)
      try await waitUntil { before.started.count == 2 }
      await s[0].workerGone("w")
      let after = Inbox()
      try await s[1].registerWorker(id: "w", properties: [], capacity: 2, runningOperations: [first], send: after.send)
      // The one it no longer runs is queued again and handed to it anew.
      try await waitUntil { after.started == [second] }
      #expect(after.started == [second])
      await s[1].finished("w", finished(first))
      #expect(try await s[0].operation(first)?.done == true)
    }
  }

  @Test("an action queued again while its worker runs it: stopped, and started anew once the stopped copy has ended")
  func startNotLostToAStoppingCopy() async throws {
    try await withSchedulers(1) { s in
      let name = try await s[0].submit(job(12, mergeable: false))
      let inbox = Inbox()
      try await s[0].registerWorker(id: "w", properties: [], capacity: 1, runningOperations: [], send: inbox.send)
      try await waitUntil { inbox.started == [name] }
      // As another process's sweeper does when the lease ran out during an outage.
      #expect(try await s[0].store.handBack(name, worker: "w"))
      try await waitUntil { inbox.killed == [name] && inbox.started.count == 2 }
      #expect(inbox.killed == [name])
      #expect(inbox.started == [name, name])
      // The stopped copy ends after the new start reached the worker, which took that start
      // for the copy it was stopping: the action must be started again, not left assigned.
      var report = ActionFinished()
      report.operationName = name
      report.response = PostgresSchedulerStore.failure(.cancelled, "the action was cancelled")
      await s[0].finished("w", report)
      try await waitUntil { inbox.started.count == 3 }
      #expect(inbox.started == [name, name, name])
      await s[0].finished("w", finished(name))
      #expect(try await s[0].operation(name)?.done == true)
    }
  }

  @Test("ListOperations pages an instance's operations in creation order; DeleteOperation only finished ones")
  func listAndDelete() async throws {
    try await withSchedulers(1) { s in
      var names: [String] = []
      for seed in 10..<15 { names.append(try await s[0].submit(job(UInt8(seed)))) }
      let page1 = try await s[0].listOperations(instance: "", pageSize: 3, after: nil)
      #expect(page1.operations.map(\.name) == Array(names.prefix(3)))
      let page2 = try await s[0].listOperations(instance: "", pageSize: 3, after: page1.next)
      #expect(page2.operations.map(\.name) == Array(names.suffix(2)) && page2.next == nil)
      #expect(await code { try await s[0].deleteOperation(names[0]) } == .failedPrecondition)
      #expect(try await s[0].cancel(names[0]))
      try await s[0].deleteOperation(names[0])
      #expect(try await s[0].operation(names[0]) == nil)
    }
  }

  @Test("unknown platform properties are INVALID_ARGUMENT; a full queue RESOURCE_EXHAUSTED")
  func refusals() async throws {
    try await withSchedulers(1, config: SchedulerConfig(maxQueuedActions: 2)) { s in
      #expect(await code { _ = try await s[0].submit(job(20, platform: [("gpu", "1")])) } == .invalidArgument)
      _ = try await s[0].submit(job(21))
      _ = try await s[0].submit(job(22))
      #expect(await code { _ = try await s[0].submit(job(23)) } == .resourceExhausted)
    }
  }
}
