import ApusProto
import ApusRPC
import Logging
import Testing

@testable import ApusStore

@Suite("grpc store", .timeLimit(.minutes(1)))
struct GRPCStoreTests {
  @Test("a silent server: the call's timeout, then the breaker fails calls at once")
  func silentServer() async throws {
    let listener = try SilentListener()
    let client = GRPCClient(host: "127.0.0.1", port: listener.port)
    let breaker = CircuitBreaker(
      name: "grpc test", failureThreshold: 1, openDuration: .seconds(60), logger: Logger(label: "test"))
    let store = GRPCStore(
      client: client, instanceName: "", role: .cas, timeout: .milliseconds(500), breaker: breaker)
    let d = digestOf([1, 2, 3])
    let clock = ContinuousClock()
    var first: RPCError?
    let waited = await clock.measure {
      first = await #expect(throws: RPCError.self) { _ = try await store.findMissing([d]) }
    }
    #expect(first?.code == .deadlineExceeded)
    #expect(waited >= .milliseconds(400) && waited < .seconds(10), "\(waited)")
    #expect(breaker.state == .open)
    var refused: StoreError?
    let fast = await clock.measure {
      refused = await #expect(throws: StoreError.self) { try await store.writeAll(d, [1, 2, 3]) }
    }
    #expect(refused?.code == .unavailable)
    #expect(fast < .milliseconds(100))
    await client.close()
  }
}
