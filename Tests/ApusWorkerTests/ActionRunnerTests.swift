import ApusTestSupport
import ApusProto
import ApusStore
import Foundation
import Logging
import NIOPosix
import Testing

@testable import ApusWorker

#if canImport(Glibc)
  import Glibc
#endif

/// One action at a time through the worker's runner, against in-memory CAS and AC.
@Suite("Action runner", .timeLimit(.minutes(3)))
struct ActionRunnerTests {
  let cas = MemoryStore()
  let actionCache = MemoryStore()
  let scratch = temporaryDirectory()

  func runner() async throws -> (ActionRunner, NIOThreadPool) {
    let pool = NIOThreadPool(numberOfThreads: 3)
    pool.start()
    let cache = try await FilesystemStore.open(
      root: "\(scratch)/cache", maxBytes: 1 << 30, fileMode: 0o444, pool: pool)
    let cas = self.cas, actionCache = self.actionCache
    try FileManager.default.createDirectory(atPath: "\(scratch)/work", withIntermediateDirectories: true)
    let runner = ActionRunner(
      workerID: "test-worker", workRoot: "\(scratch)/work", entrypoint: [], cache: cache, pool: pool,
      stores: { _ in (cas, actionCache) }, logger: Logger(label: "test"))
    return (runner, pool)
  }

  @Test("exit code, stdout, stderr and outputs are captured, uploaded and cached")
  func success() async throws {
    let (runner, pool) = try await runner()
    let action = try await ShellAction(
      "echo hello; echo oops >&2; printf data > out.txt", outputs: ["out.txt"], in: cas)
    let response = await runner.run(action.start())
    try await pool.shutdownGracefully()

    #expect(response.status?.code == 0, "\(String(describing: response.status))")
    let result = try #require(response.result)
    #expect(result.exitCode == 0)
    #expect(try await blob(result.stdoutDigest, in: cas) == "hello\n")
    #expect(try await blob(result.stderrDigest, in: cas) == "oops\n")
    #expect(result.outputFiles.map(\.path) == ["out.txt"])
    #expect(try await blob(result.outputFiles.first?.digest, in: cas) == "data")
    #expect(result.executionMetadata?.worker == "test-worker")
    let cached = try #require(try await actionCache.readAll(action.actionDigest, maxBytes: 1 << 20))
    #expect(try ActionResult(serializedBytes: cached).exitCode == 0)
    #expect(try FileManager.default.contentsOfDirectory(atPath: "\(scratch)/work").isEmpty)
  }

  @Test("records fetched bytes, input cache hits and misses, uploaded bytes and phase timings")
  func metrics() async throws {
    var (runner, pool) = try await runner()
    let recorded = RecordingMetrics()
    runner.metrics = WorkerMetrics(worker: "w1", factory: recorded)
    let w = [("worker", "w1")]
    // An input root of two files (13 bytes) and an action that writes a 4-byte output.
    let one = Array("first input".utf8), two = Array("ab".utf8)
    var root = Directory()
    for (name, bytes) in [("a.txt", one), ("b.txt", two)] {
      try await cas.writeAll(SHA256Hasher.digest(of: bytes), bytes)
      var file = FileNode()
      file.name = name
      file.digest = SHA256Hasher.digest(of: bytes).proto
      root.files.append(file)
    }
    let rootBytes = root.serializedBytes()
    try await cas.writeAll(SHA256Hasher.digest(of: rootBytes), rootBytes)
    func action(_ script: String) async throws -> ShellAction {
      var action = try await ShellAction(script, outputs: ["out"], in: cas)
      action.action.inputRootDigest = SHA256Hasher.digest(of: rootBytes).proto
      let bytes = action.action.serializedBytes()
      action.actionDigest = SHA256Hasher.digest(of: bytes)
      try await cas.writeAll(action.actionDigest, bytes)
      return action
    }
    let first = await runner.run(try await action("cat a.txt > /dev/null; printf 1234 > out").start())
    #expect(first.result?.exitCode == 0, "\(String(describing: first.status))")
    #expect(recorded.value("apus_worker_input_cache_misses_total", w) == 2)
    #expect(recorded.value("apus_worker_input_cache_hits_total", w) == 0)
    #expect(recorded.value("apus_worker_input_fetch_bytes_total", w) == Double(13 + rootBytes.count))
    // out (4 bytes), and stdout and stderr, both empty (never uploaded).
    #expect(recorded.value("apus_worker_output_upload_bytes_total", w) == 4)

    let second = await runner.run(try await action("printf 5678 > out").start())
    try await pool.shutdownGracefully()
    #expect(second.result?.exitCode == 0)
    #expect(recorded.value("apus_worker_input_cache_hits_total", w) == 2)
    #expect(recorded.value("apus_worker_input_cache_misses_total", w) == 2)
    #expect(recorded.value("apus_worker_output_upload_bytes_total", w) == 8)
    #expect(recorded.timings("apus_worker_input_fetch_seconds", w) == 2)
    #expect(recorded.timings("apus_worker_output_upload_seconds", w) == 2)
    // Outcomes are counted by the worker from the response.
    runner.metrics?.record(second, killed: false)
    runner.metrics?.record(second, killed: true)
    var timedOut = ExecuteResponse()
    timedOut.status = RPCStatusMessage(.deadlineExceeded, "too slow")
    runner.metrics?.record(timedOut, killed: false)
    for (outcome, count) in [("completed", 1.0), ("cancelled", 1), ("timed_out", 1), ("failed", 0)] {
      #expect(recorded.value("apus_worker_actions_total", w + [("outcome", outcome)]) == count, "\(outcome)")
    }
  }

  @Test("a failing command reports its exit code and is not cached", arguments: [
    ("exit 7", Int32(7)), ("kill -9 $$", Int32(128 + 9)),
  ])
  func failure(script: String, exitCode: Int32) async throws {
    let (runner, pool) = try await runner()
    let action = try await ShellAction("echo before; \(script)", in: cas)
    let response = await runner.run(action.start())
    try await pool.shutdownGracefully()

    #expect(response.status?.code == 0)
    #expect(response.result?.exitCode == exitCode)
    #expect(try await blob(response.result?.stdoutDigest, in: cas) == "before\n")
    #expect(try await actionCache.readAll(action.actionDigest, maxBytes: 1 << 20) == nil)
  }

  @Test("a timeout kills the whole process group and reports DEADLINE_EXCEEDED")
  func timeout() async throws {
    let (runner, pool) = try await runner()
    // The background sleep is a grandchild in the command's process group.
    let pidFile = "\(scratch)/child.pid"
    let action = try await ShellAction("sleep 120 & echo $! > \(pidFile); wait", in: cas)
    let started = ContinuousClock.now
    let response = await runner.run(action.start(timeout: .milliseconds(500)))
    let elapsed = ContinuousClock.now - started
    try await pool.shutdownGracefully()

    #expect(response.status?.statusCode == .deadlineExceeded, "\(String(describing: response.status))")
    #expect(elapsed < .seconds(60), "the timeout did not stop the command")
    let child = try #require(await waitForPID(at: pidFile))
    #expect(await eventually { processIsGone(child) }, "pid \(child) survived the timeout")
    #expect(try await actionCache.readAll(action.actionDigest, maxBytes: 1 << 20) == nil)
  }

  @Test("cancellation kills the process, reports CANCELLED and removes the work directory")
  func cancellation() async throws {
    let (runner, pool) = try await runner()
    let pidFile = "\(scratch)/action.pid"
    let action = try await ShellAction("echo $$ > \(pidFile); exec sleep 120", in: cas)
    let started = ContinuousClock.now
    let response = try await withThrowingTaskGroup(of: ExecuteResponse?.self) { group in
      group.addTask { await runner.run(action.start()) }
      group.addTask {
        _ = await waitForPID(at: pidFile)
        return nil
      }
      var response: ExecuteResponse?
      while let next = try await group.next() {
        if let next { response = next } else { group.cancelAll() }
      }
      return response
    }
    try await pool.shutdownGracefully()

    #expect(ContinuousClock.now - started < .seconds(60), "cancellation did not stop the command")
    #expect(response?.status?.statusCode == .cancelled, "\(String(describing: response?.status))")
    let pid = try #require(await waitForPID(at: pidFile))
    #expect(await eventually { processIsGone(pid) }, "pid \(pid) survived cancellation")
    #expect(try FileManager.default.contentsOfDirectory(atPath: "\(scratch)/work").isEmpty)
  }
}
