import ApusRPC
import AsyncHTTPClient
import Logging
import NIOCore
import NIOHTTP1
import NIOSSL

#if canImport(Glibc)
  import Glibc
#endif

/// Where an S3-compatible service is and how to talk to it.
public struct S3Location: Sendable {
  public var endpoint: String  // http(s)://host[:port]
  public var region: String
  public var bucket: String
  public var pathStyle: Bool
  /// The keys each request is signed with, fetched and renewed as needed.
  public var credentials: S3CredentialsProvider
  public var maxAttempts: Int
  public var timeouts: S3Timeouts
  /// PEM bundle of CAs to trust for an https endpoint; nil: the system's trust store.
  public var caFile: String?

  /// How the endpoint and bucket are named in logs, errors and the circuit breaker.
  public var displayName: String { "s3 \(endpoint)/\(bucket)" }
}

/// How long each phase of one S3 request may take. A frozen S3 accepts connections and then
/// says nothing, a dead one refuses them, a sick one stops mid-body: each gets its own bound.
public struct S3Timeouts: Sendable {
  /// Establishing the TCP (and TLS) connection.
  public var connect: Duration
  /// From sending the request to the response head, plus one second per MiB of request body.
  public var firstByte: Duration
  /// Between two chunks of a response body.
  public var idle: Duration
  /// The whole request, body included.
  public var request: Duration

  public init(connect: Duration, firstByte: Duration, idle: Duration, request: Duration) {
    self.connect = connect
    self.firstByte = firstByte
    self.idle = idle
    self.request = request
  }
}

/// Signed S3 requests with retries: jittered exponential backoff on 5xx, 429/SlowDown and
/// connection errors, never on other 4xx, only for idempotent requests, never past the
/// caller's deadline (`CallDeadline`), and not at all while the circuit breaker is open.
/// Errors carry the S3 error code and the attempt count; credentials never reach logs or
/// messages.
final class S3Client: Sendable {
  let location: S3Location
  let signer: S3Signer
  let http: HTTPClient
  let scheme: String
  let hostHeader: String
  let breaker: CircuitBreaker
  let metrics: S3Metrics

  init(location: S3Location, breaker: CircuitBreaker, metrics: S3Metrics = .shared) throws {
    self.location = location
    self.breaker = breaker
    self.metrics = metrics
    signer = S3Signer(region: location.region)
    guard let schemeEnd = location.endpoint.range(of: "://") else {
      throw StoreError(.invalidArgument, "s3 endpoint \(location.endpoint) has no scheme")
    }
    scheme = String(location.endpoint[..<schemeEnd.lowerBound])
    var host = String(location.endpoint[schemeEnd.upperBound...])
    while host.hasSuffix("/") { host.removeLast() }
    hostHeader = location.pathStyle ? host : "\(location.bucket).\(host)"
    var config = HTTPClient.Configuration()
    config.connectionPool = .init(idleTimeout: .seconds(60))
    config.timeout = .init(connect: TimeAmount(location.timeouts.connect), read: TimeAmount(location.timeouts.idle))
    if let caFile = location.caFile {
      var tls = TLSConfiguration.makeClientConfiguration()
      do {
        tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caFile))
      } catch {
        throw StoreError(.invalidArgument, "s3 ca_file \(caFile): \(error)")
      }
      config.tlsConfiguration = tls
    }
    http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: config)
  }

  // The last reference can drop on an event loop (a handler finishing during shutdown), where
  // a blocking shutdown traps; this one returns at once and the client keeps itself alive
  // until its connections are closed.
  deinit { http.shutdown { _ in } }

  /// The request path for `key` (path style: `/bucket/key`).
  func path(_ key: String) -> String {
    location.pathStyle ? "/\(location.bucket)/\(key)" : "/\(key)"
  }

  struct Response: Sendable {
    var status: UInt
    var headers: HTTPHeaders
    var body: HTTPClientResponse.Body
    /// When the whole request (body included) must be done.
    var deadline: ContinuousClock.Instant
  }

  /// Sends one request, retrying as described above. `body` must be replayable (bytes).
  /// `accept` decides which statuses are answers (others are errors). `probe` requests are
  /// the circuit breaker's own: they go while it is open and are tried once.
  func send(
    _ method: HTTPMethod, key: String, query: [(String, String)] = [],
    headers extra: [(String, String)] = [],
    body: [UInt8]? = nil, payloadSHA256: String? = nil,
    accept: (UInt) -> Bool = { (200..<300).contains($0) },
    probe: Bool = false
  ) async throws -> Response {
    let path = self.path(key)
    var url = "\(scheme)://\(hostHeader)\(S3Signer.encode(path, keepSlash: true))"
    if !query.isEmpty {
      url +=
        "?"
        + query.map {
          $0.1.isEmpty ? S3Signer.encode($0.0) : "\(S3Signer.encode($0.0))=\(S3Signer.encode($0.1))"
        }
        .joined(separator: "&")
    }
    let payload = payloadSHA256 ?? hex(SHA256Hasher.digest(of: body ?? []).hashBytes)
    let what = "s3 \(method.rawValue) \(key.isEmpty ? "of the bucket" : key)"
    // POSTs (creating and completing a multipart upload) are not idempotent: a retry could
    // leave an orphan upload or fail on one that did complete.
    let maxAttempts = probe || method == .POST ? 1 : location.maxAttempts
    let timeouts = location.timeouts
    var attempt = 0
    var delay = 0.05
    while true {
      attempt += 1
      if !probe { try breaker.admit() }
      if attempt > 1 { metrics.retry(method.rawValue) }
      // Asked per attempt: a retry after a long wait may need renewed keys. No keys is the
      // backend being unusable, like a refused connection: UNAVAILABLE, and the breaker
      // counts it (its prober asks again, so S3 is used as soon as keys are back).
      let credentials: AWSCredentials
      do {
        credentials = try await location.credentials.current()
      } catch is CancellationError {
        throw CancellationError()
      } catch {
        breaker.record(.failure, detail: "\(what): \(error)")
        throw StoreError(.unavailable, "\(what): \(error)")
      }
      var request = HTTPClientRequest(url: url)
      request.method = method
      for (name, value) in signer.sign(
        credentials, method: method.rawValue, host: hostHeader, path: path, query: query, payloadSHA256: payload,
        extraHeaders: extra)
      {
        request.headers.add(name: name, value: value)
      }
      if let body { request.body = .bytes(body) }
      let started = ContinuousClock.now
      let headLimit = timeouts.firstByte + .milliseconds((body?.count ?? 0) / 1049)
      let callerLeft = CallDeadline.remaining
      let limit = min(headLimit, timeouts.request, callerLeft ?? timeouts.request)
      let failure: StoreError
      do {
        guard limit > .zero else { throw StoreError(.deadlineExceeded, "\(what): the caller's deadline has passed") }
        let response: HTTPClientResponse
        do {
          response = try await http.execute(request, deadline: .now() + TimeAmount(limit))
        } catch {
          metrics.request(method.rawValue, status: nil, duration: .now - started)
          throw error
        }
        let status = response.status.code
        metrics.request(method.rawValue, status: status, duration: .now - started)
        if accept(status) {
          breaker.record(.success)
          return Response(
            status: status, headers: response.headers, body: response.body, deadline: started + timeouts.request)
        }
        let text =
          (try? await response.body.collect(upTo: 64 * 1024)).map { String(buffer: $0) } ?? ""
        let code = Self.errorCode(text)
        let retryable = status >= 500 || status == 429 || code == "SlowDown"
        breaker.record(status >= 500 ? .failure : .success, detail: "\(what): \(status) \(code ?? "")")
        let message = "\(what): \(status) \(code ?? "")"
        if !retryable {
          throw StoreError(status == 404 ? .notFound : .internal, message)
        }
        failure = StoreError(.unavailable, message)
      } catch let error as StoreError {
        throw error
      } catch {
        if Task.isCancelled {
          breaker.record(.unknown)
          throw CancellationError()
        }
        let callerBound = callerLeft.map { $0 <= min(headLimit, timeouts.request) } ?? false
        let reason = Self.describe(error, limit: limit, timeouts: timeouts)
        if callerBound, (error as? HTTPClientError) == .deadlineExceeded {
          breaker.record(.unknown)
          throw StoreError(.deadlineExceeded, "\(what): the caller's deadline passed waiting for S3")
        }
        breaker.record(.failure, detail: "\(what): \(reason)")
        failure = StoreError(.unavailable, "\(what): \(reason)")
      }
      // Full jitter: a random wait up to the current bound, which doubles each attempt.
      let wait = Duration.milliseconds(Int(Double.random(in: 0...delay) * 1000))
      delay = min(delay * 2, 5)
      let outOfTime = CallDeadline.remaining.map { $0 <= wait + .milliseconds(100) } ?? false
      if attempt >= maxAttempts || outOfTime || breaker.state != .closed {
        throw StoreError(failure.code, failure.message + (attempt > 1 ? " (after \(attempt) attempts)" : ""))
      }
      try await Task.sleep(for: wait)
    }
  }

  /// Streams a response body to `sink`, within the request's overall deadline; a body that
  /// stops or breaks counts against the circuit breaker.
  func stream(
    _ response: Response, _ what: String, into sink: (ArraySlice<UInt8>) async throws -> Void
  ) async throws {
    var iterator = response.body.makeAsyncIterator()
    while true {
      let buffer: ByteBuffer?
      do {
        buffer = try await iterator.next()
      } catch {
        if Task.isCancelled { throw CancellationError() }
        let reason = Self.describe(error, limit: location.timeouts.request, timeouts: location.timeouts)
        breaker.record(.failure, detail: "\(what): \(reason)")
        throw StoreError(.unavailable, "\(what): \(reason)")
      }
      guard let buffer else { return }
      guard ContinuousClock.now < response.deadline else {
        throw StoreError(
          .unavailable, "\(what): the response took longer than \(CircuitBreaker.seconds(location.timeouts.request))")
      }
      try await sink(ArraySlice(buffer.readableBytesView))
    }
  }

  /// The cause of a failed request, in words, with the bound that ran out.
  static func describe(_ error: any Error, limit: Duration, timeouts: S3Timeouts) -> String {
    switch error as? HTTPClientError {
    case .deadlineExceeded?: return "no response within \(CircuitBreaker.seconds(limit))"
    case .readTimeout?: return "no data for \(CircuitBreaker.seconds(timeouts.idle))"
    case .connectTimeout?: return "cannot connect within \(CircuitBreaker.seconds(timeouts.connect))"
    default: return "\(error)"
    }
  }

  /// `<Code>SlowDown</Code>` → `SlowDown`.
  static func errorCode(_ xml: String) -> String? { xmlValues("Code", in: xml).first }
}

/// The text of every `<tag>…</tag>` in `xml`, in order (S3's responses are flat enough).
func xmlValues(_ tag: String, in xml: String) -> [String] {
  var out: [String] = []
  var rest = Substring(xml)
  while let open = rest.range(of: "<\(tag)>"),
    let close = rest[open.upperBound...].range(of: "</\(tag)>")
  {
    out.append(String(rest[open.upperBound..<close.lowerBound]))
    rest = rest[close.upperBound...]
  }
  return out
}
