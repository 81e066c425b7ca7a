import Logging
import NIOCore
import NIOPosix
import Testing

@testable import ApusRPC

/// The gRPC client and server of this layer talking to each other over loopback.
@Suite("gRPC client and server", .timeLimit(.minutes(3)))
struct ClientServerTests {
  static func router() -> RPCRouter {
    var router = RPCRouter()
    router.register("/t.T/Echo") { requests, responses, _ in
      try await responses.write(try await requests.single())
    }
    router.register("/t.T/Count") { requests, responses, _ in
      let n = Int(try await requests.single().first ?? 0)
      for i in 0..<n { try await responses.write([UInt8](repeating: UInt8(i), count: 100_000)) }
    }
    router.register("/t.T/Sum") { requests, responses, _ in
      var total = 0
      for try await m in requests { total += m.count }
      try await responses.write(Array(String(total).utf8))
    }
    router.register("/t.T/Fail") { _, _, context in
      throw RPCError(.failedPrecondition, "nope: \(context.metadata["x-test"] ?? "")", statusDetails: [1, 2, 3])
    }
    router.register("/t.T/Slow") { _, _, _ in
      try await Task.sleep(for: .seconds(30))
    }
    router.register("/t.T/SlowLongLived", longLived: true) { _, responses, _ in
      try await responses.write([CallDeadline.current == nil ? 0 : 1])
    }
    // Tells how much of its deadline the handler has left, in milliseconds.
    router.register("/t.T/Remaining") { _, responses, _ in
      let ms = CallDeadline.remaining.map { $0.components.seconds * 1000 + $0.components.attoseconds / 1_000_000_000_000_000 }
      try await responses.write(Array(String(ms ?? -1).utf8))
    }
    return router
  }

  func withServer(
    _ options: GRPCServerOptions = .init(), _ body: (GRPCClient) async throws -> Void
  ) async throws {
    try await withLoopbackServer(Self.router(), server: options, body)
  }

  @Test("unary, server streaming and client streaming")
  func shapes() async throws {
    try await withServer { client in
      let big = (0..<3_000_000).map { UInt8(truncatingIfNeeded: $0) }
      #expect(try await client.unary("/t.T/Echo", big) == big)
      #expect(try await client.unary("/t.T/Echo", []) == [])
      var count = 0
      for try await m in try await client.serverStreaming("/t.T/Count", [50]) {
        #expect(m.count == 100_000)
        count += 1
      }
      #expect(count == 50)
      let call = try await client.call("/t.T/Sum")
      for _ in 0..<100 { try await call.requests.write([UInt8](repeating: 1, count: 65_536)) }
      call.finishRequests()
      #expect(try await call.responses.single() == Array("6553600".utf8))
    }
  }

  @Test("statuses, details and metadata reach the client")
  func errors() async throws {
    try await withServer { client in
      await #expect(throws: RPCError(.failedPrecondition, "nope: hi", statusDetails: [1, 2, 3])) {
        _ = try await client.unary("/t.T/Fail", [], metadata: [("x-test", "hi")])
      }
      await #expect(throws: RPCError(.unimplemented, "unknown method /t.T/Missing")) {
        _ = try await client.unary("/t.T/Missing", [])
      }
      let start = ContinuousClock.now
      await #expect(throws: RPCError.self) {
        _ = try await client.unary("/t.T/Slow", [], timeout: .milliseconds(200))
      }
      #expect(ContinuousClock.now - start < .seconds(5))
    }
  }

  @Test("many concurrent calls on one connection")
  func concurrency() async throws {
    try await withServer { client in
      try await withThrowingTaskGroup(of: Bool.self) { group in
        for i in 0..<200 {
          group.addTask {
            let payload = [UInt8](repeating: UInt8(i % 256), count: 1000 + i)
            return try await client.unary("/t.T/Echo", payload) == payload
          }
        }
        for try await ok in group { #expect(ok) }
      }
    }
  }

  @Test("the deadline reaches the handler as CallDeadline; the listener's default applies unless long-lived")
  func deadlines() async throws {
    var options = GRPCServerOptions()
    // Generous: the suite's tests run in parallel on two cores.
    options.defaultDeadline = .seconds(5)
    try await withServer(options) { client in
      let given = Int(String(decoding: try await client.unary("/t.T/Remaining", [], timeout: .seconds(9)), as: UTF8.self))
      #expect((4000...9000).contains(given ?? 0), "\(String(describing: given))")
      let defaulted = Int(String(decoding: try await client.unary("/t.T/Remaining", []), as: UTF8.self))
      #expect((1...5000).contains(defaulted ?? 0), "\(String(describing: defaulted))")
      let error = await #expect(throws: RPCError.self) { _ = try await client.unary("/t.T/Slow", []) }
      #expect(error?.code == .deadlineExceeded)
      #expect(try await client.unary("/t.T/SlowLongLived", []) == [0], "no deadline for a long-lived call")
      // A call made while serving another inherits what is left of its deadline.
      let inherited = try await CallDeadline.$current.withValue(.now() + .seconds(6)) {
        Int(String(decoding: try await client.unary("/t.T/Remaining", []), as: UTF8.self))
      }
      #expect((2001...6000).contains(inherited ?? 0), "\(String(describing: inherited))")
    }
  }

  @Test("an unreachable server is UNAVAILABLE")
  func unreachable() async throws {
    let client = GRPCClient(host: "127.0.0.1", port: 1)
    await #expect(throws: RPCError.self) { _ = try await client.unary("/t.T/Echo", [1]) }
  }
}
