import AsyncHTTPClient
import ArgumentParser
import Foundation
import NIOSSL

/// `apus probe URL`: a health check for images without curl (docker `HEALTHCHECK`,
/// compose `healthcheck`): GET the URL, exit 0 on a 2xx answer, 1 otherwise.
struct Probe: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "GET a URL (e.g. the admin listener's /readyz); exit 0 on a 2xx answer, 1 otherwise.")

  @Argument(help: "http:// or https:// URL, e.g. http://127.0.0.1:9090/readyz.")
  var url: String

  @Option(help: "Seconds to wait for the whole answer.")
  var timeout: Int = 5

  @Option(help: "PEM bundle the server's certificate must chain to (https:// with a private CA).")
  var ca: String?

  func validate() throws {
    guard timeout > 0 else { throw ValidationError("--timeout must be positive") }
    guard url.hasPrefix("http://") || url.hasPrefix("https://") else {
      throw ValidationError("expected an http:// or https:// URL, got \(url)")
    }
  }

  func run() async throws {
    var tls = TLSConfiguration.makeClientConfiguration()
    if let ca { tls.trustRoots = .file(ca) }
    let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(tlsConfiguration: tls))
    let outcome: Result<(UInt, String), any Error>
    do {
      let response = try await client.execute(HTTPClientRequest(url: url), timeout: .seconds(Int64(timeout)))
      let body = try await response.body.collect(upTo: 64 * 1024)
      outcome = .success((response.status.code, String(buffer: body)))
    } catch {
      outcome = .failure(error)
    }
    try? await client.shutdown()
    switch outcome {
    case .success(let (code, body)) where (200..<300).contains(code):
      print(body.trimmingCharacters(in: .whitespacesAndNewlines))
    case .success(let (code, body)):
      let text = body.trimmingCharacters(in: .whitespacesAndNewlines)
      FileHandle.standardError.write(Data("apus probe: \(url): HTTP \(code) \(text)\n".utf8))
      throw ExitCode(1)
    case .failure(let error):
      FileHandle.standardError.write(Data("apus probe: \(url): \(error)\n".utf8))
      throw ExitCode(1)
    }
  }
}
