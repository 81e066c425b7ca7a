import ApusRPC
import Logging
import NIOCore
import NIOPosix
import Synchronization
import Testing

@testable import ApusStore

#if canImport(Glibc)
  import Glibc
#endif

@Suite("S3 client", .timeLimit(.minutes(3)))
struct S3ClientTests {
  final class Holder: Sendable {
    let client: Mutex<S3Client?>
    init(_ client: S3Client) { self.client = Mutex(client) }
  }

  static func location(port: Int, firstByte: Duration = .seconds(1), maxAttempts: Int = 1) -> S3Location {
    S3Location(
      endpoint: "http://127.0.0.1:\(port)", region: "us-east-1", bucket: "b", pathStyle: true,
      credentials: .fixed(AWSCredentials(accessKeyID: "k", secretAccessKey: "s", sessionToken: nil)),
      maxAttempts: maxAttempts,
      timeouts: S3Timeouts(connect: .seconds(1), firstByte: firstByte, idle: .seconds(5), request: .seconds(30)))
  }

  static func breaker(threshold: Int = 5) -> CircuitBreaker {
    CircuitBreaker(name: "s3 test", failureThreshold: threshold, openDuration: .seconds(60), logger: Logger(label: "test"))
  }

  @Test("the last reference may drop on an event loop")
  func releasedOnEventLoop() async throws {
    let holder = Holder(try S3Client(location: Self.location(port: 9), breaker: Self.breaker()))
    // A blocking shutdown in deinit would trap here ("must not be called when on an EventLoop").
    let released = try await MultiThreadedEventLoopGroup.singleton.next().submit {
      holder.client.withLock { client -> Bool in
        client = nil
        return client == nil
      }
    }.get()
    #expect(released)
  }

  @Test("a silent endpoint: first-byte timeout per attempt, then the breaker fails calls at once")
  func silentEndpoint() async throws {
    let listener = try SilentListener()
    let breaker = Self.breaker(threshold: 2)
    let client = try S3Client(location: Self.location(port: listener.port, maxAttempts: 2), breaker: breaker)
    let clock = ContinuousClock()
    var error: StoreError?
    let first = await clock.measure {
      error = await #expect(throws: StoreError.self) { _ = try await client.send(.GET, key: "k") }
    }
    #expect(error?.code == .unavailable)
    #expect(error?.message.contains("no response within 1.0 s") == true, "\(String(describing: error))")
    // Two attempts of ~1 s; the upper bound is loose because CI machines are loaded.
    #expect(first >= .seconds(2) && first < .seconds(15), "two attempts of ~1 s: \(first)")
    #expect(breaker.state == .open)
    let refused = await clock.measure {
      error = await #expect(throws: StoreError.self) { _ = try await client.send(.HEAD, key: "k") }
    }
    #expect(error?.message.contains("circuit open") == true)
    #expect(refused < .milliseconds(100))
    try await client.http.shutdown()
  }

  @Test("the caller's deadline bounds the request and stops retries; it does not count against the breaker")
  func callerDeadline() async throws {
    let listener = try SilentListener()
    let breaker = Self.breaker(threshold: 1)
    let client = try S3Client(
      location: Self.location(port: listener.port, firstByte: .seconds(20), maxAttempts: 4), breaker: breaker)
    let clock = ContinuousClock()
    var error: StoreError?
    let elapsed = await clock.measure {
      await CallDeadline.$current.withValue(.now() + .milliseconds(500)) {
        error = await #expect(throws: StoreError.self) { _ = try await client.send(.GET, key: "k") }
      }
    }
    #expect(error?.code == .deadlineExceeded)
    #expect(elapsed < .seconds(15), "under one 20 s first-byte timeout, let alone four: \(elapsed)")
    #expect(breaker.state == .closed)
    try await client.http.shutdown()
  }

  @Test("a caller that goes away cancels the S3 request it was waiting on")
  func cancellation() async throws {
    let listener = try SilentListener()
    let client = try S3Client(
      location: Self.location(port: listener.port, firstByte: .seconds(20), maxAttempts: 4), breaker: Self.breaker())
    let clock = ContinuousClock()
    let started = clock.now
    let request = Task { try await client.send(.GET, key: "k") }
    try await Task.sleep(for: .milliseconds(200))
    request.cancel()
    await #expect(throws: CancellationError.self) { _ = try await request.value }
    #expect(clock.now - started < .seconds(10), "well under the 20 s first-byte timeout")
    try await client.http.shutdown()
  }
}
