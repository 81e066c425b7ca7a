/// The EC2 instance role's credentials from the instance metadata service, IMDSv2 only:
/// `PUT /latest/api/token` (with a TTL header), then with that token
/// `GET /latest/meta-data/iam/security-credentials/` for the role's name and
/// `GET …/security-credentials/ROLE` for its keys.
///
/// `AWS_EC2_METADATA_SERVICE_ENDPOINT` moves the service (the SDKs' variable; tests point it
/// at a loopback stand-in) and `AWS_EC2_METADATA_DISABLED=true` turns it off.
struct InstanceMetadataCredentialsSource: CredentialsSource {
  let environment: EnvironmentLookup
  let http: MetadataHTTP
  var name: String { "instance metadata" }

  static let defaultEndpoint = "http://169.254.169.254"
  /// The token is fetched for each refresh (a few per day), so its lifetime hardly matters;
  /// 6 hours is what the SDKs ask for.
  static let tokenTTLSeconds = 21600

  var endpoint: String {
    var e = environment("AWS_EC2_METADATA_SERVICE_ENDPOINT").flatMap { $0.isEmpty ? nil : $0 } ?? Self.defaultEndpoint
    while e.hasSuffix("/") { e.removeLast() }
    return e
  }

  func fetch() async throws -> (AWSCredentials, String) {
    if environment("AWS_EC2_METADATA_DISABLED")?.lowercased() == "true" {
      throw CredentialsError("turned off by AWS_EC2_METADATA_DISABLED=true")
    }
    let base = endpoint
    guard base.hasPrefix("http://") || base.hasPrefix("https://") else {
      throw CredentialsError("AWS_EC2_METADATA_SERVICE_ENDPOINT \(base) is not an http(s) URL")
    }
    let (tokenStatus, tokenBody) = try await http.request(
      .PUT, base + "/latest/api/token", headers: [("x-aws-ec2-metadata-token-ttl-seconds", "\(Self.tokenTTLSeconds)")])
    guard tokenStatus == 200, !tokenBody.isEmpty else {
      throw CredentialsError("PUT \(base)/latest/api/token (IMDSv2 token) answered \(tokenStatus)")
    }
    let token = String(decoding: tokenBody, as: UTF8.self)
    let auth = [("x-aws-ec2-metadata-token", token)]
    let rolesURL = base + "/latest/meta-data/iam/security-credentials/"
    let (rolesStatus, rolesBody) = try await http.request(.GET, rolesURL, headers: auth)
    if rolesStatus == 404 { throw CredentialsError("the instance has no IAM role (GET \(rolesURL) answered 404)") }
    guard rolesStatus == 200 else { throw CredentialsError("GET \(rolesURL) answered \(rolesStatus)") }
    guard let role = Self.roleName(rolesBody) else {
      throw CredentialsError("GET \(rolesURL) named no role")
    }
    let (status, body) = try await http.request(.GET, rolesURL + role, headers: auth)
    guard status == 200 else { throw CredentialsError("GET \(rolesURL)\(role) answered \(status)") }
    do {
      return (try AWSCredentials.parse(json: body), "instance role \(role) at \(base)")
    } catch {
      throw CredentialsError("GET \(rolesURL)\(role): \(error)")
    }
  }

  /// The first line of the role listing, if it is a plausible IAM role name (it goes into
  /// a URL path).
  static func roleName(_ body: [UInt8]) -> String? {
    let first = String(decoding: body, as: UTF8.self).split(whereSeparator: \.isNewline).first
    guard let first else { return nil }
    let name = first.trimmedOfBlanks()
    let allowed = name.unicodeScalars.allSatisfy { c in
      switch c {
      case "a"..."z", "A"..."Z", "0"..."9", "+", "=", ",", ".", "@", "_", "-": return true
      default: return false
      }
    }
    return !name.isEmpty && allowed ? name : nil
  }
}

extension Substring {
  fileprivate func trimmedOfBlanks() -> String {
    var s = self
    while s.first == " " || s.first == "\t" { s = s.dropFirst() }
    while s.last == " " || s.last == "\t" { s = s.dropLast() }
    return String(s)
  }
}
