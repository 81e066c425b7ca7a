import Synchronization
import Testing

@testable import ApusStore

@Suite("S3 credentials provider", .timeLimit(.minutes(1)))
struct S3CredentialsProviderTests {
  /// A source that answers from a script and counts its calls; `delay` makes concurrent
  /// callers overlap.
  final class FakeSource: CredentialsSource, Sendable {
    let name: String
    let answers: Mutex<[Result<AWSCredentials, CredentialsError>]>
    let calls = Atomic<Int>(0)
    let delay: Duration

    init(_ name: String, _ answers: [Result<AWSCredentials, CredentialsError>], delay: Duration = .zero) {
      self.name = name
      self.answers = Mutex(answers)
      self.delay = delay
    }

    func fetch() async throws -> (AWSCredentials, String) {
      calls.add(1, ordering: .relaxed)
      if delay > .zero { try await Task.sleep(for: delay) }
      let answer = answers.withLock { $0.count > 1 ? $0.removeFirst() : $0[0] }
      return (try answer.get(), name)
    }
  }

  final class Clock: Sendable {
    let seconds = Atomic<Int64>(1000)
    var now: @Sendable () -> Int64 { { self.seconds.load(ordering: .relaxed) } }
  }

  static func keys(_ id: String, expiring: Int64?) -> AWSCredentials {
    AWSCredentials(accessKeyID: id, secretAccessKey: "s", sessionToken: "t", expiration: expiring)
  }

  @Test("the chain takes the first source with keys; its error names every source tried")
  func chain() async throws {
    let env = FakeSource("environment", [.failure(CredentialsError("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set"))])
    let imds = FakeSource("instance metadata", [.success(Self.keys("A", expiring: nil))])
    let provider = S3CredentialsProvider(mode: "auto", sources: [env, imds])
    #expect(try await provider.current().accessKeyID == "A")
    #expect(try await provider.current().accessKeyID == "A")
    #expect(imds.calls.load(ordering: .relaxed) == 1, "keys without expiration are fetched once")

    let down = FakeSource("instance metadata", [.failure(CredentialsError("PUT http://x/latest/api/token: refused"))])
    let none = S3CredentialsProvider(mode: "auto", sources: [env, down])
    await #expect(
      throws: CredentialsError(
        "no AWS credentials (credentials: auto; tried environment: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set; instance metadata: PUT http://x/latest/api/token: refused)"
      )
    ) { try await none.current() }
  }

  @Test("concurrent callers with nothing cached share one fetch")
  func singleFlight() async throws {
    let source = FakeSource("instance metadata", [.success(Self.keys("A", expiring: nil))], delay: .milliseconds(200))
    let provider = S3CredentialsProvider(mode: "instance", sources: [source])
    let ids = try await withThrowingTaskGroup(of: String.self) { group in
      for _ in 0..<20 { group.addTask { try await provider.current().accessKeyID } }
      return try await group.reduce(into: []) { $0.append($1) }
    }
    #expect(ids == Array(repeating: "A", count: 20))
    #expect(source.calls.load(ordering: .relaxed) == 1)
  }

  @Test("keys are renewed ahead of expiry, expired ones are never used, and a failed renewal keeps the valid ones")
  func rotation() async throws {
    let clock = Clock()
    let source = FakeSource(
      "instance metadata",
      [
        .success(Self.keys("A", expiring: 1000 + 3600)),
        .failure(CredentialsError("down")),
        .success(Self.keys("B", expiring: 1000 + 7200)),
      ])
    let provider = S3CredentialsProvider(mode: "instance", sources: [source], now: clock.now)
    #expect(try await provider.current().accessKeyID == "A")
    clock.seconds.store(1000 + 3600 - 200, ordering: .relaxed)  // in the 5-minute window
    #expect(try await provider.current().accessKeyID == "A", "a failed renewal keeps the valid keys")
    #expect(source.calls.load(ordering: .relaxed) == 2)
    #expect(try await provider.current().accessKeyID == "A", "no new renewal before the hold is over")
    #expect(source.calls.load(ordering: .relaxed) == 2)
    clock.seconds.store(1000 + 3600 - 200 + S3CredentialsProvider.renewalHoldSeconds, ordering: .relaxed)
    #expect(try await provider.current().accessKeyID == "B")
    #expect(source.calls.load(ordering: .relaxed) == 3)
  }

  @Test("with no keys at all a failure is reused for a second, then the sources are asked again")
  func failureHold() async throws {
    let clock = Clock()
    let source = FakeSource(
      "instance metadata", [.failure(CredentialsError("down")), .success(Self.keys("C", expiring: 1000 + 3600))])
    let provider = S3CredentialsProvider(mode: "instance", sources: [source], now: clock.now)
    for _ in 0..<3 {
      await #expect(throws: CredentialsError.self) { try await provider.current() }
    }
    #expect(source.calls.load(ordering: .relaxed) == 1)
    clock.seconds.store(1000 + S3CredentialsProvider.failureHoldSeconds, ordering: .relaxed)
    #expect(try await provider.current().accessKeyID == "C")
  }

  @Test("expired keys are not used when renewal fails")
  func expired() async throws {
    let clock = Clock()
    let source = FakeSource(
      "instance metadata", [.success(Self.keys("A", expiring: 1000 + 3600)), .failure(CredentialsError("down"))])
    let provider = S3CredentialsProvider(mode: "instance", sources: [source], now: clock.now)
    _ = try await provider.current()
    clock.seconds.store(1000 + 3600 - 5, ordering: .relaxed)
    await #expect(throws: CredentialsError.self) { try await provider.current() }
  }

  @Test("the environment source: both keys or an error saying which is missing")
  func environment() async throws {
    let full = EnvironmentCredentialsSource { ["AWS_ACCESS_KEY_ID": "K", "AWS_SECRET_ACCESS_KEY": "S", "AWS_SESSION_TOKEN": "T"][$0] }
    #expect(try await full.fetch().0 == AWSCredentials(accessKeyID: "K", secretAccessKey: "S", sessionToken: "T"))
    let half = EnvironmentCredentialsSource { ["AWS_ACCESS_KEY_ID": "K"][$0] }
    await #expect(throws: CredentialsError("AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not")) {
      try await half.fetch()
    }
  }

  @Test("IMDS turned off by AWS_EC2_METADATA_DISABLED, without a request")
  func imdsDisabled() async throws {
    let provider = S3CredentialsProvider.make(
      .instance, staticKeys: nil,
      environment: { ["AWS_EC2_METADATA_DISABLED": "TRUE", "AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://127.0.0.1:9"][$0] })
    await #expect(
      throws: CredentialsError(
        "no AWS credentials (credentials: instance; tried instance metadata: turned off by AWS_EC2_METADATA_DISABLED=true)")
    ) { try await provider.current() }
    await provider.close()
  }
}
