import Logging
import NIOCore
import NIOPosix
import Synchronization
import Testing

@testable import ApusRPC

/// The DATA path both sides share: payloads go from the outbound queue straight into the
/// socket buffer (`NGHTTP2_DATA_FLAG_NO_COPY`), so frames must reassemble exactly whatever
/// the frame, window and message sizes.
@Suite("HTTP/2 DATA without nghttp2's copy", .timeLimit(.minutes(3)))
struct HTTP2ConnectionTests {
  /// Bytes that differ at every offset of a part, so a misplaced or repeated slice shows.
  static func pattern(_ count: Int, seed: Int) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ seed &* 7 &+ $0 >> 8) }
  }

  /// Sizes around nghttp2's 16 KiB frame payload and the 256 KiB write batch.
  static let partSizes = [1, 16_383, 16_384, 16_385, 5, 262_144, 300_001, 0, 9, 70_000]

  /// The errors a handler's writes failed with.
  final class Failures: Sendable {
    let errors = Mutex<[String]>([])
  }

  static func router(writeFailures: Failures? = nil) -> RPCRouter {
    var router = RPCRouter()
    // One response per part size, each written as three slices of one array.
    router.register("/t.T/Parts") { _, responses, _ in
      for (i, size) in partSizes.enumerated() {
        let bytes = pattern(size, seed: i)
        let a = size / 3, b = 2 * size / 3
        try await responses.write(parts: [bytes[..<a], bytes[a..<b], bytes[b...]])
      }
    }
    router.register("/t.T/Echo") { requests, responses, _ in
      for try await m in requests { try await responses.write(m) }
    }
    // Streams 20 MB until the client goes away, recording how its write failed.
    router.register("/t.T/Flood") { _, responses, _ in
      do {
        for i in 0..<200 { try await responses.write(pattern(100_000, seed: i)) }
      } catch {
        writeFailures?.errors.withLock { $0.append("\(error)") }
        throw error
      }
    }
    return router
  }

  func withServer(
    server serverOptions: GRPCServerOptions = .init(), client clientOptions: GRPCServerOptions = .init(),
    router: RPCRouter = router(), _ body: (GRPCClient) async throws -> Void
  ) async throws {
    try await withLoopbackServer(router, server: serverOptions, client: clientOptions, body)
  }

  func expectParts(_ client: GRPCClient) async throws {
    var i = 0
    for try await m in try await client.serverStreaming("/t.T/Parts", []) {
      #expect(m == Self.pattern(Self.partSizes[i], seed: i), "response \(i)")
      i += 1
    }
    #expect(i == Self.partSizes.count)
  }

  @Test("responses written as slices reassemble to the same bytes")
  func responsesReassemble() async throws {
    try await withServer { client in try await expectParts(client) }
  }

  @Test("stream windows smaller than a frame and a message: both directions still reassemble")
  func smallWindows() async throws {
    var server = GRPCServerOptions()
    server.streamWindowBytes = 7_000
    var client = GRPCServerOptions()
    client.streamWindowBytes = 5_000
    try await withServer(server: server, client: client) { client in
      try await expectParts(client)
      // Requests go out through the client's side of the same path.
      // Responses are read while requests are written: with windows this small, neither
      // side's messages fit in flight.
      let call = try await client.call("/t.T/Echo")
      let sent = (0..<6).map { Self.pattern(40_000 + $0 * 10_001, seed: $0) }
      let writer = Task {
        for m in sent { try await call.requests.write(m) }
        call.finishRequests()
      }
      var received: [[UInt8]] = []
      for try await m in call.responses { received.append(m) }
      try await writer.value
      #expect(received == sent)
    }
  }

  @Test("a client reset in the middle of a download fails the handler's writes; the connection goes on")
  func resetMidSend() async throws {
    let failures = Failures()
    try await withServer(router: Self.router(writeFailures: failures)) { client in
      let call = try await client.call("/t.T/Flood")
      try await call.requests.write([])
      call.finishRequests()
      var iterator = call.responses.makeAsyncIterator()
      for i in 0..<3 {
        #expect(try await iterator.next() == Self.pattern(100_000, seed: i))
      }
      call.cancelCall()
      // The handler learns of the reset at its next write (generous: loaded CI machines).
      let deadline = ContinuousClock.now + .seconds(20)
      while failures.errors.withLock({ $0.isEmpty }) && ContinuousClock.now < deadline {
        try await Task.sleep(for: .milliseconds(20))
      }
      #expect(failures.errors.withLock { $0.count } == 1)
      try await expectParts(client)
    }
  }
}
