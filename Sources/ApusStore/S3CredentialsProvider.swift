import ApusConfig
import AsyncHTTPClient
import Logging

#if canImport(Glibc)
  import Glibc
#endif

/// The keys an S3 client signs each request with: fetched from a chain of sources (see
/// ``S3CredentialsMode``), cached, and renewed before they expire (``CredentialsRefreshPolicy``).
///
/// Renewal happens on demand, single-flight: the first request that finds the keys due
/// fetches new ones while the others keep using the old ones (or, when there are none,
/// wait for that one fetch), so no background task is needed and a burst of requests
/// makes one call to the metadata service. When no source has keys, the error says what
/// each source answered, and is reused for a second so a burst of requests against a dead
/// metadata service does not wait for each one.
public actor S3CredentialsProvider {
  let mode: String
  let sources: [any CredentialsSource]
  let policy: CredentialsRefreshPolicy
  let now: @Sendable () -> Int64
  let logger: Logger
  /// The client the network sources share, shut down by ``close()``; nil without them.
  let http: HTTPClient?

  private var cached: AWSCredentials?
  private var fetchedAt: Int64 = 0
  private var origin = ""
  /// Set while one caller fetches: the callers waiting for it.
  private var waiters: [CheckedContinuation<Result<AWSCredentials, any Error>, Never>]?
  /// After a failed fetch: no new attempt before this time (the error is reused).
  private var retryAfter: Int64 = 0
  private var lastFailure: CredentialsError?
  private var warned = false

  /// How long a failure is reused before the sources are asked again.
  static let failureHoldSeconds: Int64 = 1
  /// How long a failed renewal waits before the next one, while the old keys are valid.
  static let renewalHoldSeconds: Int64 = 5

  init(
    mode: String, sources: [any CredentialsSource], http: HTTPClient? = nil,
    policy: CredentialsRefreshPolicy = .init(), now: @escaping @Sendable () -> Int64 = { Int64(time(nil)) },
    logger: Logger = Logger(label: "apus.s3.credentials")
  ) {
    self.mode = mode
    self.sources = sources
    self.http = http
    self.policy = policy
    self.now = now
    self.logger = logger
  }

  /// Keys that never change (tests, and `credentials: static`).
  public static func fixed(_ credentials: AWSCredentials) -> S3CredentialsProvider {
    S3CredentialsProvider(mode: "static", sources: [StaticCredentialsSource(credentials: credentials)])
  }

  /// The provider for a config's `credentials` mode; network sources read the process
  /// environment for their endpoints.
  public static func make(
    _ mode: S3CredentialsMode, staticKeys: AWSCredentials?,
    environment: @escaping @Sendable (String) -> String? = { getenv($0).map { String(cString: $0) } }
  ) -> S3CredentialsProvider {
    if mode == .static, let staticKeys { return fixed(staticKeys) }
    let env = EnvironmentCredentialsSource(environment: environment)
    if mode == .environment { return S3CredentialsProvider(mode: mode.rawValue, sources: [env]) }
    let client = MetadataHTTP.makeClient()
    let container = ContainerCredentialsSource(
      environment: environment, http: MetadataHTTP(client: client, deadline: .seconds(5)))
    let instance = InstanceMetadataCredentialsSource(
      environment: environment, http: MetadataHTTP(client: client, deadline: .seconds(2)))
    let sources: [any CredentialsSource] =
      switch mode {
      case .container: [container]
      case .instance: [instance]
      default: [env, container, instance]
      }
    return S3CredentialsProvider(mode: mode.rawValue, sources: sources, http: client)
  }

  /// Keys to sign a request with now, or a `CredentialsError` naming every source tried.
  public func current() async throws -> AWSCredentials {
    while true {
      let t = now()
      switch policy.decide(cached, fetchedAt: fetchedAt, now: t) {
      case .use:
        if let cached { return cached }
      case .renew:
        // Keep signing with the valid keys while one caller renews them, and after a
        // failed renewal until the hold is over.
        guard let cached else { continue }
        if waiters != nil || t < retryAfter { return cached }
        if case .success(let fresh) = await fetch() { return fresh }
        return cached
      case .fetch:
        if waiters != nil {
          let result = await withCheckedContinuation { waiters?.append($0) }
          if case .failure(let error) = result, error is CancellationError { continue }  // the fetcher gave up
          return try result.get()
        }
        if t < retryAfter, let lastFailure { throw lastFailure }
        return try await fetch().get()
      }
    }
  }

  /// Asks the sources in order; stores and announces the result to the callers waiting.
  private func fetch() async -> Result<AWSCredentials, any Error> {
    waiters = []
    var reasons: [String] = []
    var result: Result<AWSCredentials, any Error>?
    for source in sources {
      do {
        let (credentials, from) = try await source.fetch()
        result = .success(credentials)
        let t = now()
        if from != origin || warned {
          logger.info(
            "s3 credentials from \(from)",
            metadata: ["valid_for": "\(credentials.expiration.map { "\($0 - t) s" } ?? "ever")"])
        } else {
          logger.debug("s3 credentials renewed from \(from)")
        }
        cached = credentials
        fetchedAt = t
        origin = from
        lastFailure = nil
        retryAfter = 0
        warned = false
        break
      } catch is CancellationError {
        result = .failure(CancellationError())
        break
      } catch {
        reasons.append("\(source.name): \(error)")
      }
    }
    if result == nil {
      let failure = CredentialsError(
        "no AWS credentials (credentials: \(mode); tried \(reasons.joined(separator: "; ")))")
      lastFailure = failure
      // With valid keys still in hand, renewal is retried every few seconds, not on every
      // request: each try holds up the request that makes it.
      retryAfter = now() + (cached != nil ? Self.renewalHoldSeconds : Self.failureHoldSeconds)
      if !warned {
        logger.warning("\(failure)\(cached != nil ? "; still using the previous ones until they expire" : "")")
        warned = true
      }
      result = .failure(failure)
    }
    let outcome = result ?? .failure(CancellationError())
    let waiting = waiters ?? []
    waiters = nil
    for waiter in waiting { waiter.resume(returning: outcome) }
    return outcome
  }

  /// Shuts the metadata HTTP client down.
  public func close() async {
    try? await http?.shutdown()
  }

  // As in S3Client: the last reference may drop on an event loop, where a blocking
  // shutdown traps.
  deinit { http?.shutdown { _ in } }
}
