import AsyncHTTPClient
import NIOCore
import NIOHTTP1

#if canImport(Glibc)
  import Glibc
#endif

/// Small GET/PUT requests to a credentials endpoint (instance metadata, container
/// credentials) on its own HTTP client: a 1 s connect timeout and a short deadline per
/// request, because on a host without the endpoint every S3 call waits for this to fail.
struct MetadataHTTP: Sendable {
  let client: HTTPClient
  let deadline: Duration

  static func makeClient() -> HTTPClient {
    var config = HTTPClient.Configuration()
    config.timeout = .init(connect: .seconds(1), read: .seconds(2))
    // The metadata service's credentials must not leave the host: no redirects anywhere.
    config.redirectConfiguration = .disallow
    config.connectionPool = .init(idleTimeout: .seconds(30))
    return HTTPClient(eventLoopGroupProvider: .singleton, configuration: config)
  }

  /// The status and up to 64 KiB of body; errors become a `CredentialsError` saying what
  /// failed at `url` (which carries no secret).
  func request(
    _ method: HTTPMethod, _ url: String, headers: [(String, String)]
  ) async throws -> (UInt, [UInt8]) {
    var request = HTTPClientRequest(url: url)
    request.method = method
    for (name, value) in headers { request.headers.add(name: name, value: value) }
    do {
      let response = try await client.execute(request, deadline: .now() + TimeAmount(deadline))
      let body = try await response.body.collect(upTo: 64 * 1024)
      return (response.status.code, Array(body.readableBytesView))
    } catch {
      if Task.isCancelled { throw CancellationError() }
      throw CredentialsError("\(method.rawValue) \(url): \(Self.describe(error, deadline: deadline))")
    }
  }

  static func describe(_ error: any Error, deadline: Duration) -> String {
    switch error as? HTTPClientError {
    case .connectTimeout?: return "cannot connect within 1 s"
    case .deadlineExceeded?: return "no answer within \(CircuitBreaker.seconds(deadline))"
    case .readTimeout?: return "no data for 2 s"
    default:
      if error is NIOTooManyBytesError { return "the answer is over 64 KiB" }
      // NIO's IOError reads "connection reset (error set): Connection refused (errno: 111)".
      if let io = error as? IOError, io.errnoCode == ECONNREFUSED { return "connection refused" }
      return "\(error)"
    }
  }
}
