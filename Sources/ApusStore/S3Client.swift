import AsyncHTTPClient
import Logging
import NIOCore
import NIOHTTP1

#if canImport(Glibc)
  import Glibc
#endif

/// Where an S3-compatible service is and how to talk to it.
public struct S3Location: Sendable {
  public var endpoint: String  // http(s)://host[:port]
  public var region: String
  public var bucket: String
  public var pathStyle: Bool
  public var accessKeyID: String
  public var secretAccessKey: String
  public var sessionToken: String?
  public var maxAttempts: Int
  public var requestTimeout: TimeAmount
}

/// Signed S3 requests with retries: jittered exponential backoff on 5xx, 429/SlowDown and
/// connection errors, never on other 4xx. Errors carry the S3 error code and the attempt
/// count; credentials never reach logs or messages.
final class S3Client: Sendable {
  let location: S3Location
  let signer: S3Signer
  let http: HTTPClient
  let scheme: String
  let hostHeader: String

  init(location: S3Location) throws {
    self.location = location
    signer = S3Signer(
      accessKeyID: location.accessKeyID, secretAccessKey: location.secretAccessKey,
      sessionToken: location.sessionToken, region: location.region)
    guard let schemeEnd = location.endpoint.range(of: "://") else {
      throw StoreError(.invalidArgument, "s3 endpoint \(location.endpoint) has no scheme")
    }
    scheme = String(location.endpoint[..<schemeEnd.lowerBound])
    var host = String(location.endpoint[schemeEnd.upperBound...])
    while host.hasSuffix("/") { host.removeLast() }
    hostHeader = location.pathStyle ? host : "\(location.bucket).\(host)"
    var config = HTTPClient.Configuration()
    config.connectionPool = .init(idleTimeout: .seconds(60))
    config.timeout = .init(connect: .seconds(10), read: location.requestTimeout)
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
  }

  /// Sends one request, retrying as described above. `body` must be replayable (bytes).
  /// `accept` decides which statuses are answers (others are errors).
  func send(
    _ method: HTTPMethod, key: String, query: [(String, String)] = [],
    headers extra: [(String, String)] = [],
    body: [UInt8]? = nil, payloadSHA256: String? = nil,
    accept: (UInt) -> Bool = { (200..<300).contains($0) }
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
    var attempt = 0
    var delay = 0.05
    while true {
      attempt += 1
      var request = HTTPClientRequest(url: url)
      request.method = method
      for (name, value) in signer.sign(
        method: method.rawValue, host: hostHeader, path: path, query: query, payloadSHA256: payload,
        extraHeaders: extra)
      {
        request.headers.add(name: name, value: value)
      }
      if let body { request.body = .bytes(body) }
      let what = "s3 \(method.rawValue) \(key)"
      do {
        let response = try await http.execute(request, timeout: location.requestTimeout)
        let status = response.status.code
        if accept(status) {
          return Response(status: status, headers: response.headers, body: response.body)
        }
        let text =
          (try? await response.body.collect(upTo: 64 * 1024)).map { String(buffer: $0) } ?? ""
        let code = Self.errorCode(text)
        let retryable = status >= 500 || status == 429 || code == "SlowDown"
        if !retryable || attempt >= location.maxAttempts {
          let suffix = retryable ? " after \(attempt) attempts" : ""
          throw StoreError(
            status == 404 ? .notFound : retryable ? .unavailable : .internal,
            "\(what): \(status) \(code ?? "")\(suffix)")
        }
      } catch let error as StoreError {
        throw error
      } catch {
        if attempt >= location.maxAttempts {
          throw StoreError(.unavailable, "\(what): \(error) after \(attempt) attempts")
        }
      }
      // Full jitter: a random wait up to the current bound, which doubles each attempt.
      try await Task.sleep(for: .milliseconds(Int(Double.random(in: 0...delay) * 1000)))
      delay = min(delay * 2, 5)
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
