import ApusTestSupport
import Logging
import Testing

@testable import ApusStore

@Suite("S3 and circuit breaker metrics", .timeLimit(.minutes(1)))
struct S3MetricsTests {
  @Test("each attempt is counted by verb and status (`error` without a response), retries by verb")
  func attempts() async throws {
    let recorded = RecordingMetrics()
    let port = try SilentListener().port  // closed again: connections are refused
    let breaker = CircuitBreaker(
      name: "s3 test", failureThreshold: 10, openDuration: .seconds(60), logger: Logger(label: "test"))
    let client = try S3Client(
      location: S3ClientTests.location(port: port, maxAttempts: 3), breaker: breaker,
      metrics: S3Metrics(factory: recorded))
    await #expect(throws: StoreError.self) { _ = try await client.send(.GET, key: "k") }
    #expect(recorded.value("apus_s3_requests_total", [("verb", "GET"), ("status", "error")]) == 3)
    #expect(recorded.value("apus_s3_retries_total", [("verb", "GET")]) == 2)
    #expect(recorded.timings("apus_s3_request_duration_seconds", [("verb", "GET")]) == 3)
  }

  @Test("apus_circuit_breaker_open follows the breaker: 1 open or half-open, 0 closed")
  func breakerGauge() async throws {
    let recorded = RecordingMetrics()
    let breaker = CircuitBreaker(
      name: "grpc grpc://h:1", failureThreshold: 2, openDuration: .milliseconds(10), logger: Logger(label: "test"),
      metrics: recorded)
    let gauge = { recorded.value("apus_circuit_breaker_open", [("backend", "grpc grpc://h:1")]) }
    #expect(gauge() == 0)
    breaker.record(.failure)
    #expect(gauge() == 0)
    breaker.record(.failure)
    #expect(breaker.state == .open)
    #expect(gauge() == 1)
    breaker.record(.success)
    #expect(gauge() == 0)
    breaker.trip(detail: "down at start")
    #expect(gauge() == 1)
  }
}
