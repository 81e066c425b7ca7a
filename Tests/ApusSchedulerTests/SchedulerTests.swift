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
    let s = scheduler(SchedulerConfig(maxJobRetries: 1))
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
}
