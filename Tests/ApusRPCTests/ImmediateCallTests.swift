import ApusTestSupport
import Logging
import NIOPosix
import Synchronization
import Testing

@testable import ApusRPC

/// Unary calls a route answers on the event loop (``RPCImmediateHandler``) against the same
/// calls answered by a handler task: the client cannot tell them apart.
@Suite("Unary calls answered on the event loop", .timeLimit(.minutes(3)))
struct ImmediateCallTests {
  /// How often each path ran, to tell which one answered.
  final class Counts: Sendable {
    let immediate = Atomic<Int>(0)
    let task = Atomic<Int>(0)
  }

  /// The answer both paths give: the request reversed, then the `x-test` metadata; a
  /// request starting with 0xFF fails with details; one starting with 0xFE makes the
  /// immediate path decline.
  static func answer(_ request: [UInt8], _ context: ServerContext) throws -> [UInt8] {
    if request.first == 0xFF {
      throw RPCError(.notFound, "no \(request.count)", statusDetails: [7, 8])
    }
    return request.reversed() + Array((context.metadata["x-test"] ?? "").utf8)
  }

  static func router(_ counts: Counts) -> RPCRouter {
    var router = RPCRouter()
    let immediate: RPCImmediateHandler = { request, context in
      if request.first == 0xFE { return nil }
      counts.immediate.add(1, ordering: .relaxed)
      return try answer(request, context)
    }
    let handler: RPCHandler = { requests, responses, context in
      counts.task.add(1, ordering: .relaxed)
      try await responses.write(try answer(try await requests.single(), context))
    }
    router.register("/t.I/Now", immediate: immediate, handler)
    router.register("/t.I/Task", handler)
    return router
  }

  func withServer(
    _ options: GRPCServerOptions = .init(), _ body: (GRPCClient, Counts) async throws -> Void
  ) async throws {
    let counts = Counts()
    try await withLoopbackServer(Self.router(counts), server: options) {
      try await body($0, counts)
    }
  }

  @Test("an answer at hand gives the same bytes as the task, without a task")
  func sameBytes() async throws {
    try await withServer { client, counts in
      let metadata = [("x-test", "meta")]
      for request: [UInt8] in [[1, 2, 3], [], Array(repeating: 9, count: 100_000)] {
        let now = try await client.unary("/t.I/Now", request, metadata: metadata)
        let task = try await client.unary("/t.I/Task", request, metadata: metadata)
        #expect(now == task)
        #expect(now == request.reversed() + Array("meta".utf8))
      }
      // Each call ran one path; /t.I/Now ran its task only when the request did not end
      // in the read that brought its first bytes (the 100 kB one does not).
      #expect(counts.task.load(ordering: .relaxed) + counts.immediate.load(ordering: .relaxed) == 6)
      // This client writes HEADERS and DATA separately; the DATA carries END_STREAM most of
      // the time, so of many calls some are answered at once.
      for _ in 0..<50 { _ = try await client.unary("/t.I/Now", [1]) }
      #expect(counts.immediate.load(ordering: .relaxed) >= 1)
    }
  }

  @Test("errors from the immediate path are the task's status, message and details")
  func sameErrors() async throws {
    try await withServer { client, counts in
      for path in ["/t.I/Now", "/t.I/Task"] {
        await #expect(throws: RPCError(.notFound, "no 2", statusDetails: [7, 8])) {
          _ = try await client.unary(path, [0xFF, 0])
        }
      }
      #expect(counts.immediate.load(ordering: .relaxed) + counts.task.load(ordering: .relaxed) == 2)
      await #expect(throws: RPCError(.unimplemented, "unknown method /t.I/Missing")) {
        _ = try await client.unary("/t.I/Missing", [1])
      }
    }
  }

  @Test("a route that cannot answer now falls back to its task")
  func fallback() async throws {
    try await withServer { client, counts in
      let answer = try await client.unary("/t.I/Now", [0xFE, 1])
      #expect(answer == [1, 0xFE])
      #expect(counts.immediate.load(ordering: .relaxed) == 0)
      #expect(counts.task.load(ordering: .relaxed) == 1)
    }
  }

  @Test("a request in several messages or streamed slowly goes to the task")
  func notWhole() async throws {
    try await withServer { client, counts in
      let call = try await client.call("/t.I/Now")
      try await call.requests.write([1])
      // The message must reach the server in a read of its own, before END_STREAM: generous,
      // since under a loaded test run the client's write can take tens of milliseconds.
      try await Task.sleep(for: .milliseconds(500))
      call.finishRequests()
      #expect(try await call.responses.single() == [1])
      #expect(counts.task.load(ordering: .relaxed) == 1)
      let two = try await client.call("/t.I/Now")
      try await two.requests.write([1])
      try await two.requests.write([2])
      two.finishRequests()
      await #expect(throws: RPCError(.internal, "expected one request message, got more")) {
        _ = try await two.responses.single()
      }
    }
  }

  @Test("request bytes held for the event loop go back to the budget, whichever path answers")
  func budgetReturns() async throws {
    let budget = BufferBudget(limitBytes: 64 << 20)
    var options = GRPCServerOptions()
    options.budget = budget
    try await withServer(options) { client, counts in
      for size in [1, 1_000, 100_000] {
        let request = [UInt8](repeating: 3, count: size)
        #expect(try await client.unary("/t.I/Now", request) == request)
      }
      #expect(try await client.unary("/t.I/Now", [0xFE, 1]) == [1, 0xFE])
      await #expect(throws: RPCError(.notFound, "no 1", statusDetails: [7, 8])) {
        _ = try await client.unary("/t.I/Now", [0xFF])
      }
      let two = try await client.call("/t.I/Now")
      try await two.requests.write([1])
      try await two.requests.write([2])
      two.finishRequests()
      await #expect(throws: RPCError.self) { _ = try await two.responses.single() }
      // Whether a call is answered at once depends on its DATA arriving in the read of its
      // HEADERS (this client writes them separately), so make many, as `sameBytes` does.
      for _ in 0..<50 { _ = try await client.unary("/t.I/Now", [1]) }
      #expect(counts.immediate.load(ordering: .relaxed) >= 1)
      let released = await eventually(within: .seconds(10)) { budget.heldBytes == 0 }
      #expect(released, "\(budget.heldBytes) bytes still held")
    }
  }

  @Test("many concurrent immediate calls on one connection")
  func concurrency() async throws {
    try await withServer { client, _ in
      try await withThrowingTaskGroup(of: Bool.self) { group in
        for i in 0..<300 {
          group.addTask {
            let payload = [UInt8](repeating: UInt8(i % 250), count: 1 + i)
            return try await client.unary("/t.I/Now", payload) == payload.reversed()
          }
        }
        for try await ok in group { #expect(ok) }
      }
    }
  }
}
