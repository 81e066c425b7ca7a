import Foundation

/// The container credentials endpoint (ECS task roles, EKS Pod Identity), as the AWS SDKs
/// read it: `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` (on `http://169.254.170.2`) or
/// `AWS_CONTAINER_CREDENTIALS_FULL_URI`, with `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` (read
/// at each fetch: EKS rotates it) or `AWS_CONTAINER_AUTHORIZATION_TOKEN` as the
/// `Authorization` header.
///
/// A full URI over plain http must name a loopback address or one of the ECS/EKS agent
/// addresses, as in the SDKs: the token and the credentials must not cross a network
/// in clear.
struct ContainerCredentialsSource: CredentialsSource {
  let environment: EnvironmentLookup
  let http: MetadataHTTP
  var name: String { "container" }

  static let ecsHost = "http://169.254.170.2"
  static let plainHTTPHosts: Set<String> = ["169.254.170.2", "169.254.170.23", "[fd00:ec2::23]", "localhost", "[::1]"]

  func fetch() async throws -> (AWSCredentials, String) {
    let url = try Self.url(environment)
    var headers: [(String, String)] = [("accept", "application/json")]
    if let token = try authorization() { headers.append(("authorization", token)) }
    let (status, body) = try await http.request(.GET, url, headers: headers)
    guard status == 200 else { throw CredentialsError("GET \(url) answered \(status)") }
    do {
      return (try AWSCredentials.parse(json: body), url)
    } catch {
      throw CredentialsError("GET \(url): \(error)")
    }
  }

  /// The endpoint from the environment, checked.
  static func url(_ environment: EnvironmentLookup) throws -> String {
    if let relative = environment("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"), !relative.isEmpty {
      return ecsHost + (relative.hasPrefix("/") ? relative : "/" + relative)
    }
    guard let full = environment("AWS_CONTAINER_CREDENTIALS_FULL_URI"), !full.isEmpty else {
      throw CredentialsError("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI and AWS_CONTAINER_CREDENTIALS_FULL_URI are not set")
    }
    if full.hasPrefix("https://") { return full }
    guard full.hasPrefix("http://") else {
      throw CredentialsError("AWS_CONTAINER_CREDENTIALS_FULL_URI \(full) is not an http(s) URL")
    }
    let authority = full.dropFirst("http://".count).prefix { $0 != "/" && $0 != "?" }
    let host: Substring
    if authority.hasPrefix("["), let close = authority.firstIndex(of: "]") {
      host = authority[...close]
    } else {
      host = authority.prefix { $0 != ":" }
    }
    let parts = host.split(separator: ".", omittingEmptySubsequences: false)
    let loopbackV4 = parts.count == 4 && parts[0] == "127" && parts.allSatisfy { UInt8($0) != nil }
    guard loopbackV4 || plainHTTPHosts.contains(String(host)) else {
      throw CredentialsError(
        "AWS_CONTAINER_CREDENTIALS_FULL_URI \(full): plain http only to a loopback or the ECS/EKS agent address")
    }
    return full
  }

  /// The `Authorization` header's value, if one is configured.
  func authorization() throws -> String? {
    var token: String?
    if let path = environment("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"), !path.isEmpty {
      guard let data = FileManager.default.contents(atPath: path) else {
        throw CredentialsError("cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE \(path)")
      }
      token = String(decoding: data, as: UTF8.self)
    } else {
      token = environment("AWS_CONTAINER_AUTHORIZATION_TOKEN")
    }
    guard var token, !token.isEmpty else { return nil }
    while token.last == "\n" || token.last == "\r" { token.removeLast() }
    guard !token.contains("\n"), !token.contains("\r") else {
      throw CredentialsError("the container authorization token has a line break in it")
    }
    return token
  }
}
