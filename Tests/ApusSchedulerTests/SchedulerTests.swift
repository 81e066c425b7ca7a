import ApusConfig
import ApusProto
import Logging
import Synchronization
import Testing

@testable import ApusScheduler

/// A fake worker connection: records what the scheduler sends.
final class Inbox: Sendable {
  let messages = Mutex<[SchedulerMessage]>([])
  var send: @Sendable (SchedulerMessage) -> Void { { m in self.messages.withLock { $0.append(m) } } }
  var started: [String] { messages.withLock { $0.compactMap { $0.start?.operationName } } }
  var killed: [String] { messages.withLock { $0.compactMap { $0.kill?.operationName } } }
}

@Suite("Scheduler", .timeLimit(.minutes(3)))
struct SchedulerTests {
  func scheduler(_ config: SchedulerConfig = SchedulerConfig()) -> Scheduler {
    Scheduler(name: "test", config: config, logger: Logger(label: "test"))
  }

  func job(_ seed: UInt8, platform: [(String, String)] = [], mergeable: Bool = true, priority: Int32 = 0) -> ExecutionJob {
    ExecutionJob(
      instanceName: "", actionDigest: BlobDigest(hashBytes: [UInt8](repeating: seed, count: 32), sizeBytes: 1),
      action: Action(),
      platform: platform.map { var p = Platform.Property(); p.name = $0.0; p.value = $0.1; return p },
      priority: priority, mergeable: mergeable)
  }

  func props(_ pairs: [(String, String)]) -> [Platform.Property] {
    pairs.map { var p = Platform.Property(); p.name = $0.0; p.value = $0.1; return p }
  }

  func done(_ response: ExecuteResponse = ExecuteResponse()) -> ActionFinished {
    var f = ActionFinished()
    f.response = response
    return f
  }

  @Test("queued actions go to a matching worker and complete")
  func lifecycle() async throws {
    let s = scheduler()
    let name = try await s.submit(job(1, platform: [("OSFamily", "linux")]))
    #expect(try #require(await s.operation(name)).done == false)
    let windows = Inbox(), linux = Inbox()
    try await s.registerWorker(id: "w", properties: props([("OSFamily", "windows")]), capacity: 1, send: windows.send)
    #expect(windows.started.isEmpty)
    try await s.registerWorker(id: "l", properties: props([("OSFamily", "linux")]), capacity: 1, send: linux.send)
    #expect(linux.started == [name])
    var finished = done()
    finished.operationName = name
    await s.finished("l", finished)
    #expect(try #require(await s.operation(name)).done)
  }

  @Test("identical cacheable actions merge; do_not_cache ones do not")
  func merging() async throws {
    let s = scheduler()
    let a = try await s.submit(job(2))
    let b = try await s.submit(job(2))
    let c = try await s.submit(job(2, mergeable: false))
    #expect(a == b)
    #expect(a != c)
  }

  @Test("unknown properties and over-long timeouts are rejected as INVALID_ARGUMENT")
  func validation() async {
    let s = scheduler()
    func code(_ job: ExecutionJob) async -> RPCStatusCode? {
      do {
        _ = try await s.submit(job)
        return nil
      } catch {
        return error.code
      }
    }
    #expect(await code(job(3, platform: [("gpu", "1")])) == .invalidArgument)
    #expect(await code(job(3, platform: [("cpu_count", "many")])) == .invalidArgument)
    var long = job(4)
    var t = ProtoDuration()
    t.seconds = 1_000_000
    long.action.timeout = t
    #expect(await code(long) == .invalidArgument)
  }

  @Test("a second worker with a connected worker's id is refused as ALREADY_EXISTS")
  func duplicateWorker() async throws {
    let s = scheduler()
    try await s.registerWorker(id: "w", properties: [], capacity: 1, send: Inbox().send)
    await #expect(throws: SchedulerError(.alreadyExists, "a worker named \"w\" is already connected")) {
      try await s.registerWorker(id: "w", properties: [], capacity: 1, send: Inbox().send)
    }
  }

  @Test("a watcher that stops listening does not stop the others")
  func watcherGone() async throws {
    let s = scheduler()
    let name = try await s.submit(job(13))
    let kept = try #require(await s.watch(name))
    do {
      let dropped = try #require(await s.watch(name))
      _ = dropped  // ends here: its continuation is terminated
    }
    try await s.registerWorker(id: "w", properties: [], capacity: 1, send: Inbox().send)
    var finished = done()
    finished.operationName = name
    await s.finished("w", finished)
    var stages: [ExecutionStage] = []
    for await op in kept {
      stages.append(try ExecuteOperationMetadata(serializedBytes: try #require(op.metadata).value).stage)
    }
    #expect(stages == [.queued, .executing, .completed])
  }

  @Test("minimum properties are reserved while running")
  func minimum() async throws {
    let s = scheduler()
    let inbox = Inbox()
    try await s.registerWorker(id: "w", properties: props([("cpu_count", "4")]), capacity: 4, send: inbox.send)
    let a = try await s.submit(job(5, platform: [("cpu_count", "3")]))
    let b = try await s.submit(job(6, platform: [("cpu_count", "2")]))
    #expect(inbox.started == [a])
    var f = done()
    f.operationName = a
    await s.finished("w", f)
    #expect(inbox.started == [a, b])
  }

  @Test("a lost worker's action is retried elsewhere, then given up")
  func retries() async throws {
    let s = scheduler(SchedulerConfig(maxJobRetries: 1, workerReconnectGraceSeconds: 0))
    let name = try await s.submit(job(7))
    let first = Inbox(), second = Inbox(), third = Inbox()
    try await s.registerWorker(id: "1", properties: [], capacity: 1, send: first.send)
    await s.workerGone("1")
    try await s.registerWorker(id: "2", properties: [], capacity: 1, send: second.send)
    #expect(second.started == [name])
    await s.workerGone("2")
    try await s.registerWorker(id: "3", properties: [], capacity: 1, send: third.send)
    #expect(third.started.isEmpty)
    let op = try #require(await s.operation(name))
    #expect(op.done)
    let response = try ExecuteResponse(serializedBytes: try #require(op.response).value)
    #expect(response.status?.statusCode == .unavailable)
  }

  @Test("an action no worker can ever run fails after the grace period")
  func unsatisfiable() async throws {
    let s = scheduler(SchedulerConfig(unsatisfiableGraceSeconds: 0))
    try await s.registerWorker(id: "w", properties: props([("OSFamily", "linux")]), capacity: 1, send: Inbox().send)
    let name = try await s.submit(job(8, platform: [("OSFamily", "plan9")]))
    await s.tick()  // first seen unsatisfiable
    try await Task.sleep(for: .milliseconds(10))
    await s.tick()
    let op = try #require(await s.operation(name))
    let response = try ExecuteResponse(serializedBytes: try #require(op.response).value)
    #expect(response.status?.statusCode == .failedPrecondition)
    #expect(response.status?.message.contains("OSFamily=plan9") == true)
  }

  @Test("with no worker connected, actions wait instead of failing")
  func noWorkers() async throws {
    let s = scheduler(SchedulerConfig(unsatisfiableGraceSeconds: 0))
    let name = try await s.submit(job(12, platform: [("OSFamily", "linux")]))
    await s.tick()
    try await Task.sleep(for: .milliseconds(10))
    await s.tick()
    #expect(try #require(await s.operation(name)).done == false)
  }

  @Test("watchers see every stage; cancel kills the running action")
  func watchAndCancel() async throws {
    let s = scheduler()
    let inbox = Inbox()
    let name = try await s.submit(job(9))
    let stream = try #require(await s.watch(name))
    try await s.registerWorker(id: "w", properties: [], capacity: 1, send: inbox.send)
    #expect(await s.cancel(name))
    var stages: [Int32] = []
    for await op in stream {
      let m = try ExecuteOperationMetadata(serializedBytes: try #require(op.metadata).value)
      stages.append(m.stage.rawValue)
    }
    #expect(stages == [2, 3, 4])
    let response = try #require(await s.operation(name)?.response)
    #expect(try ExecuteResponse(serializedBytes: response.value).status?.statusCode == .cancelled)
    #expect(inbox.killed == [name])
  }

  @Test("priority orders the queue")
  func priority() async throws {
    let s = scheduler()
    let low = try await s.submit(job(10, priority: 5))
    let high = try await s.submit(job(11, priority: -5))
    let inbox = Inbox()
    try await s.registerWorker(id: "w", properties: [], capacity: 1, send: inbox.send)
    #expect(inbox.started == [high])
    _ = low
  }

  @Test("the lane with the best head goes first, across platforms")
  func priorityAcrossLanes() async throws {
    let s = scheduler()
    _ = try await s.submit(job(20, priority: 5))
    let urgent = try await s.submit(job(21, platform: [("OSFamily", "linux")], priority: 0))
    let inbox = Inbox()
    try await s.registerWorker(id: "w", properties: props([("OSFamily", "linux")]), capacity: 1, send: inbox.send)
    #expect(inbox.started == [urgent])
  }

  @Test("beyond max_queued_actions an instance's Execute is RESOURCE_EXHAUSTED; merges and other instances pass")
  func queueCap() async throws {
    let s = scheduler(SchedulerConfig(maxQueuedActions: 2))
    _ = try await s.submit(job(30))
    _ = try await s.submit(job(31))
    await #expect(
      throws: SchedulerError(
        .resourceExhausted,
        "2 actions are queued for instance \"\", the scheduler's max_queued_actions; retry later")
    ) {
      try await s.submit(job(32))
    }
    _ = try await s.submit(job(30))  // merged with the queued one
    var other = job(32)
    other.instanceName = "other"
    _ = try await s.submit(other)
    #expect(await s.queueLength == 3)
    try await s.registerWorker(id: "w", properties: [], capacity: 1, send: Inbox().send)
    _ = try await s.submit(job(33))  // one left the queue for the worker
  }

  @Test("a worker reconnecting within the grace keeps what it lists; the rest is requeued at once")
  func reconnectGrace() async throws {
    let s = scheduler(SchedulerConfig(workerReconnectGraceSeconds: 60))
    let a = try await s.submit(job(40))
    let b = try await s.submit(job(41))
    let first = Inbox(), other = Inbox(), again = Inbox()
    try await s.registerWorker(id: "w", properties: [], capacity: 2, send: first.send)
    #expect(Set(first.started) == [a, b])
    await s.workerGone("w")
    try await s.registerWorker(id: "x", properties: [], capacity: 2, send: other.send)
    #expect(other.started.isEmpty)  // still w's during the grace
    try await s.registerWorker(id: "w", properties: [], capacity: 2, runningOperations: [a], send: again.send)
    #expect(other.started == [b])
    #expect(again.started.isEmpty)
    var f = done()
    f.operationName = a
    await s.finished("w", f)
    #expect(try #require(await s.operation(a)).done)
  }

  @Test("after the grace a vanished worker's actions are requeued, counting an attempt")
  func graceExpiry() async throws {
    let s = scheduler(SchedulerConfig(maxJobRetries: 0, workerReconnectGraceSeconds: 1))
    let a = try await s.submit(job(42))
    try await s.registerWorker(id: "w", properties: [], capacity: 1, send: Inbox().send)
    await s.workerGone("w")
    await s.tick()
    #expect(try #require(await s.operation(a)).done == false)
    try await Task.sleep(for: .milliseconds(1100))
    await s.tick()
    let op = try #require(await s.operation(a))
    #expect(op.done)  // max_job_retries 0: the one attempt was the last
    #expect(try ExecuteResponse(serializedBytes: try #require(op.response).value).status?.statusCode == .unavailable)
  }

  @Test("a late result from the worker that lost an action wins; the copy running is killed")
  func lateResult() async throws {
    let s = scheduler(SchedulerConfig(workerReconnectGraceSeconds: 0))
    let a = try await s.submit(job(43))
    let w1 = Inbox(), w2 = Inbox()
    try await s.registerWorker(id: "1", properties: [], capacity: 1, send: w1.send)
    await s.workerGone("1")
    try await s.registerWorker(id: "2", properties: [], capacity: 1, send: w2.send)
    #expect(w2.started == [a])
    var response = ExecuteResponse()
    response.message = "from 1"
    var late = done(response)
    late.operationName = a
    await s.finished("1", late)
    #expect(w2.killed == [a])
    var second = ExecuteResponse()
    second.message = "from 2"
    var ignored = done(second)
    ignored.operationName = a
    await s.finished("2", ignored)
    var unknown = done()
    unknown.operationName = "operations/nope"
    await s.finished("2", unknown)
    let op = try #require(await s.operation(a))
    #expect(try ExecuteResponse(serializedBytes: try #require(op.response).value).message == "from 1")
    // Worker 2's slot is free again.
    let b = try await s.submit(job(44))
    #expect(w2.started == [a, b])
  }

  @Test("operations list by instance in creation order, in pages; only finished ones delete")
  func listAndDelete() async throws {
    let s = scheduler()
    let a = try await s.submit(job(50))
    var elsewhere = job(51)
    elsewhere.instanceName = "other"
    _ = try await s.submit(elsewhere)
    let b = try await s.submit(job(52))
    let c = try await s.submit(job(53))
    let first = await s.listOperations(instance: "", pageSize: 2, after: nil)
    #expect(first.operations.map(\.name) == [a, b])
    let token = try #require(first.next)
    let second = await s.listOperations(instance: "", pageSize: 2, after: token)
    #expect(second.operations.map(\.name) == [c])
    #expect(second.next == nil)
    await #expect(throws: SchedulerError.self) { try await s.deleteOperation(a) }
    do {
      try await s.deleteOperation(a)
    } catch {
      #expect(error.code == .failedPrecondition)
    }
    #expect(await s.cancel(a))
    try await s.deleteOperation(a)
    #expect(await s.operation(a) == nil)
    do {
      try await s.deleteOperation(a)
      Issue.record("deleting twice succeeded")
    } catch {
      #expect(error.code == .notFound)
    }
    #expect(await s.listOperations(instance: "", pageSize: 10, after: nil).operations.map(\.name) == [b, c])
  }

  @Test("unsubscribing ends the watch and leaves the operation queued")
  func unsubscribe() async throws {
    let s = scheduler()
    let name = try await s.submit(job(60))
    let watch = try #require(await s.subscribe(name))
    await s.unsubscribe(name, watch.id)
    var seen = 0
    for await _ in watch.stream { seen += 1 }
    #expect(seen == 1)
    #expect(try #require(await s.operation(name)).done == false)
    #expect(await s.queueLength == 1)
  }

  @Test("a stale stream's end does not remove the registration that replaced it")
  func staleSessionEnd() async throws {
    let s = scheduler()
    let old = Inbox(), new = Inbox()
    try await s.registerWorker(id: "w", properties: [], capacity: 1, session: 1, send: old.send)
    await s.workerGone("w")  // evicted as silent while its stream still looks open
    try await s.registerWorker(id: "w", properties: [], capacity: 1, session: 2, send: new.send)
    await s.workerGone("w", session: 1)  // the old stream finally ends
    #expect(await s.workerCount == 1)
    let name = try await s.submit(job(70))
    #expect(new.started == [name])
    await s.workerGone("w", session: 2)
    #expect(await s.workerCount == 0)
  }
}
