import Foundation

/// One set of AWS signing keys, and when they stop working (nil: never, e.g. static keys).
///
/// `description` never shows the secret or the token: these values reach log lines and
/// error messages only through it.
public struct AWSCredentials: Sendable, Equatable, CustomStringConvertible {
  public var accessKeyID: String
  public var secretAccessKey: String
  public var sessionToken: String?
  /// Seconds since the Unix epoch.
  public var expiration: Int64?

  public init(accessKeyID: String, secretAccessKey: String, sessionToken: String?, expiration: Int64? = nil) {
    self.accessKeyID = accessKeyID
    self.secretAccessKey = secretAccessKey
    self.sessionToken = sessionToken
    self.expiration = expiration
  }

  public var description: String {
    "AWSCredentials(expiration: \(expiration.map(String.init) ?? "never"))"
  }

  /// The document the instance metadata service and the container credentials endpoint
  /// answer with: `AccessKeyId`, `SecretAccessKey`, `Token`, `Expiration` (ISO 8601, UTC),
  /// and from IMDS a `Code` that is `Success` when the role's keys are usable.
  /// Throws a message naming what is wrong, never a value from the document.
  static func parse(json: [UInt8]) throws(CredentialsError) -> AWSCredentials {
    struct Document: Decodable {
      var code: String?
      var accessKeyID: String?
      var secretAccessKey: String?
      var token: String?
      var expiration: String?
      enum CodingKeys: String, CodingKey {
        case code = "Code", accessKeyID = "AccessKeyId", secretAccessKey = "SecretAccessKey", token = "Token"
        case expiration = "Expiration"
      }
    }
    let d: Document
    do {
      d = try JSONDecoder().decode(Document.self, from: Data(json))
    } catch {
      throw CredentialsError("the answer is not a JSON credentials document")
    }
    if let code = d.code, code != "Success" { throw CredentialsError("the answer's Code is \(code)") }
    guard let key = d.accessKeyID, !key.isEmpty, let secret = d.secretAccessKey, !secret.isEmpty else {
      throw CredentialsError("the answer has no AccessKeyId and SecretAccessKey")
    }
    var expiration: Int64?
    if let text = d.expiration {
      guard let seconds = HTTPDates.iso8601(text) else {
        throw CredentialsError("the answer's Expiration \"\(text.prefix(40))\" is not an ISO 8601 time")
      }
      expiration = seconds
    }
    return AWSCredentials(
      accessKeyID: key, secretAccessKey: secret, sessionToken: d.token.flatMap { $0.isEmpty ? nil : $0 },
      expiration: expiration)
  }
}

/// Why one credentials source gave nothing, in words fit for an error message.
struct CredentialsError: Error, Sendable, Equatable, CustomStringConvertible {
  var message: String
  init(_ message: String) { self.message = message }
  var description: String { message }
}
