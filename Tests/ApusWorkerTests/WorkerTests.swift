import ApusTestSupport
import ApusConfig
import ApusProto
import ApusRPC
import ApusScheduler
import ApusServices
import ApusStore
import Foundation
import Logging
import NIOPosix
import ServiceLifecycle
import ServiceLifecycleTestKit
import Testing

@testable import ApusWorker

/// A real worker against an in-process scheduler and CAS over gRPC on a loopback port.
@Suite("Worker", .timeLimit(.minutes(3)))
struct WorkerTests {
  let cas = MemoryStore()
  let actionCache = MemoryStore()
  let scratch = temporaryDirectory()
  let scheduler = Scheduler(name: "main", config: SchedulerConfig(), logger: Logger(label: "test"))

  /// Starts the server side; returns it and its `grpc://` URL.
  func startServer() async throws -> (GRPCServer, String) {
    let table = InstanceTable(
      instances: [
        "": Instance(cas: cas, actionCache: actionCache, actionCacheUpdates: true, scheduler: scheduler)
      ],
      maxMessageBytes: 4 << 20)
    var router = RemoteExecutionAPI.router(for: table)
    WorkerAPIService(scheduler: scheduler, logger: Logger(label: "test")).register(on: &router)
    let server = GRPCServer(
      router: router, group: MultiThreadedEventLoopGroup.singleton, logger: Logger(label: "test"))
    let address = try await server.start(host: "127.0.0.1", port: 0)
    return (server, "grpc://127.0.0.1:\(try #require(address.port))")
  }

  func submit(_ action: ShellAction) async throws -> String {
    try await scheduler.submit(
      ExecutionJob(
        instanceName: "", actionDigest: action.actionDigest, action: action.action, platform: [],
        priority: 0, mergeable: false))
  }

  /// The operation's final ExecuteResponse.
  func outcome(_ name: String) async throws -> ExecuteResponse {
    let stream = try #require(await scheduler.watch(name))
    var last: ApusProto.Operation?
    for await op in stream { last = op }
    let response = try #require(last?.response, "operation \(name) ended without a response")
    return try ExecuteResponse(serializedBytes: response.value)
  }

  func stage(_ name: String) async -> ExecutionStage? {
    guard let metadata = await scheduler.operation(name)?.metadata else { return nil }
    return try? ExecuteOperationMetadata(serializedBytes: metadata.value).stage
  }

  @Test("runs actions, frees the slot of a killed one, and drains running work on shutdown")
  func lifecycle() async throws {
    let (server, url) = try await startServer()
    let worker = Worker(
      config: WorkerConfig(
        scheduler: url, cas: url, workDirectory: "\(scratch)/work", cacheDirectory: "\(scratch)/cache",
        cacheMaxBytes: 1 << 30, maxConcurrentActions: 1, platformCommands: [:]),
      logger: Logger(label: "test"))

    try await testGracefulShutdown { trigger in
      try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await worker.run() }
        #expect(await eventually { await scheduler.workerCount == 1 })

        // An action runs end to end; its output is in the CAS.
        let hello = try await submit(try await ShellAction("echo hi; exit 3", in: cas))
        let first = try await outcome(hello)
        #expect(first.status?.code == 0)
        #expect(first.result?.exitCode == 3)
        #expect(try await blob(first.result?.stdoutDigest, in: cas) == "hi\n")
        #expect(first.result?.executionMetadata?.worker == worker.id)

        // Cancelling a running action kills its process and frees the only slot.
        let pidFile = "\(scratch)/long.pid"
        let long = try await submit(try await ShellAction("echo $$ > \(pidFile); exec sleep 300", in: cas))
        let pid = try #require(await waitForPID(at: pidFile))
        #expect(await scheduler.cancel(long))
        #expect(try await outcome(long).status?.statusCode == .cancelled)
        #expect(await eventually { processIsGone(pid) }, "pid \(pid) survived the kill")
        let next = try await submit(try await ShellAction("echo next", in: cas))
        #expect(try await blob(try await outcome(next).result?.stdoutDigest, in: cas) == "next\n")

        // Graceful shutdown lets the running action finish and report before the worker leaves.
        let drainFile = "\(scratch)/drain.pid"
        let draining = try await submit(
          try await ShellAction("echo $$ > \(drainFile); sleep 1; echo drained", in: cas))
        _ = try #require(await waitForPID(at: drainFile))
        trigger.triggerGracefulShutdown()
        let drained = try await outcome(draining)
        #expect(drained.status?.code == 0, "\(String(describing: drained.status))")
        #expect(try await blob(drained.result?.stdoutDigest, in: cas) == "drained\n")
        // run() returns on its own once drained.
        try await group.next()
        #expect(await eventually { await scheduler.workerCount == 0 })
      }
    }
    await server.shutdown(grace: .seconds(1))
  }

  @Test("after going_away the worker takes no new action; it stays queued for another worker")
  func handsBackWhileDraining() async throws {
    let (server, url) = try await startServer()
    let worker = Worker(
      config: WorkerConfig(
        scheduler: url, cas: url, workDirectory: "\(scratch)/work", cacheDirectory: "\(scratch)/cache",
        cacheMaxBytes: 1 << 30, maxConcurrentActions: 2, platformCommands: [:]),
      logger: Logger(label: "test"))
    try await testGracefulShutdown { trigger in
      try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await worker.run() }
        #expect(await eventually { await scheduler.workerCount == 1 })
        let pidFile = "\(scratch)/slow.pid"
        let slow = try await submit(try await ShellAction("echo $$ > \(pidFile); sleep 2", in: cas))
        _ = try #require(await waitForPID(at: pidFile))
        trigger.triggerGracefulShutdown()
        // The scheduler has heard going_away once it stops offering work to this worker.
        try await Task.sleep(for: .milliseconds(300))
        let late = try await submit(try await ShellAction("echo late", in: cas))
        #expect(try await outcome(slow).result?.exitCode == 0)
        try await group.next()
        #expect(await stage(late) == .queued, "the late action should wait for another worker")
      }
    }
    await server.shutdown(grace: .seconds(1))
  }

  @Test("drain(): no new action, the running one finishes, and the worker stays registered")
  func drain() async throws {
    let (server, url) = try await startServer()
    let worker = Worker(
      config: WorkerConfig(
        scheduler: url, cas: url, workDirectory: "\(scratch)/work", cacheDirectory: "\(scratch)/cache",
        cacheMaxBytes: 1 << 30, maxConcurrentActions: 2, platformCommands: [:]),
      logger: Logger(label: "test"))
    #expect(worker.status == WorkerStatus(id: worker.id, scheduler: url, registered: false, slots: 2, busy: 0, draining: false))
    try await testGracefulShutdown { trigger in
      try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await worker.run() }
        #expect(await eventually { worker.status.registered })
        #expect(await eventually { await scheduler.workerCount == 1 })
        let pidFile = "\(scratch)/running.pid"
        let running = try await submit(try await ShellAction("echo $$ > \(pidFile); sleep 2; echo done", in: cas))
        _ = try #require(await waitForPID(at: pidFile))
        #expect(worker.status.busy == 1)

        worker.drain()
        #expect(worker.status.draining)
        // The scheduler has heard going_away once it stops offering work to this worker.
        try await Task.sleep(for: .milliseconds(300))
        let late = try await submit(try await ShellAction("echo late", in: cas))
        let finished = try await outcome(running)
        #expect(finished.status?.code == 0)
        #expect(try await blob(finished.result?.stdoutDigest, in: cas) == "done\n")
        try await Task.sleep(for: .milliseconds(500))
        #expect(await stage(late) == .queued, "a drained worker must not take the late action")
        // Still up and connected, idle, draining.
        let status = worker.status
        #expect(status.registered && status.draining && status.busy == 0, "\(status)")
        #expect(await scheduler.workerCount == 1)

        trigger.triggerGracefulShutdown()
        try await group.next()
        #expect(!worker.status.registered)
      }
    }
    await server.shutdown(grace: .seconds(1))
  }

  @Test("an action outlives a broken stream; its result reaches the next scheduler URL, and it runs once")
  func survivesABrokenStream() async throws {
    let (first, url1) = try await startServer()
    let (second, url2) = try await startServer()  // the same Scheduler behind a second listener
    var config = WorkerConfig(
      scheduler: url1, cas: url2, workDirectory: "\(scratch)/work", cacheDirectory: "\(scratch)/cache",
      cacheMaxBytes: 1 << 30, maxConcurrentActions: 1, platformCommands: [:])
    config.schedulers = [url1, url2]
    let worker = Worker(config: config, logger: Logger(label: "test"))
    try await testGracefulShutdown { trigger in
      try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await worker.run() }
        #expect(await eventually { worker.status.registered && worker.status.scheduler == url1 })
        let pidFile = "\(scratch)/through.pid"
        let through = try await submit(try await ShellAction("echo $$ >> \(pidFile); sleep 2; echo through", in: cas))
        _ = try #require(await waitForPID(at: pidFile))
        // The stream breaks; the scheduler requeues the action. The worker may only notice when
        // it next writes (the result): that result is kept and sent after registering again.
        await first.shutdown(grace: .zero)
        // Given back to the same worker after it registered again: not run twice, reported once.
        let result = try await outcome(through)
        #expect(result.status?.code == 0, "\(String(describing: result.status))")
        #expect(try await blob(result.result?.stdoutDigest, in: cas) == "through\n")
        let ran = try String(contentsOfFile: pidFile, encoding: .utf8)
        #expect(ran.split(separator: "\n").count == 1)
        #expect(worker.status.registered && worker.status.scheduler == url2)
        trigger.triggerGracefulShutdown()
        try await group.next()
      }
    }
    await second.shutdown(grace: .seconds(1))
  }

  @Test("a drained worker whose stream breaks reconnects only to report: going_away at once, no new action")
  func drainedWorkerReconnectsToReport() async throws {
    let (first, url1) = try await startServer()
    let (second, url2) = try await startServer()
    var config = WorkerConfig(
      scheduler: url1, cas: url2, workDirectory: "\(scratch)/work", cacheDirectory: "\(scratch)/cache",
      cacheMaxBytes: 1 << 30, maxConcurrentActions: 2, platformCommands: [:])
    config.schedulers = [url1, url2]
    let worker = Worker(config: config, logger: Logger(label: "test"))
    try await testGracefulShutdown { trigger in
      try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await worker.run() }
        #expect(await eventually { worker.status.registered })
        let pidFile = "\(scratch)/drained.pid"
        let running = try await submit(try await ShellAction("echo $$ >> \(pidFile); sleep 2; echo reported", in: cas))
        _ = try #require(await waitForPID(at: pidFile))
        worker.drain()
        try await Task.sleep(for: .milliseconds(300))
        await first.shutdown(grace: .zero)
        let late = try await submit(try await ShellAction("echo late", in: cas))
        let result = try await outcome(running)
        #expect(result.status?.code == 0, "\(String(describing: result.status))")
        #expect(try await blob(result.result?.stdoutDigest, in: cas) == "reported\n")
        try await Task.sleep(for: .milliseconds(500))
        #expect(await stage(late) == .queued, "a drained worker must not take the late action")
        let status = worker.status
        #expect(status.draining && status.busy == 0 && status.scheduler == url2, "\(status)")
        #expect(try String(contentsOfFile: pidFile, encoding: .utf8).split(separator: "\n").count == 1)
        trigger.triggerGracefulShutdown()
        try await group.next()
      }
    }
    await second.shutdown(grace: .seconds(1))
  }
}
