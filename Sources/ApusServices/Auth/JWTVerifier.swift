import ApusConfig
import ApusRPC
import Foundation
import JWTKit

/// Verifies JWT bearer tokens against the keys of `auth.jwt.jwks` (see `JWTConfig`).
/// Errors say what failed, never the token.
final class JWTVerifier: Sendable {
  let config: JWTConfig
  private let keys: JWTKeyCollection
  /// The JWKS's key ids: a token naming another is refused (jwt-kit would fall back to a
  /// default key).
  private let kids: Set<String>

  /// The algorithms accepted, whatever else the JWKS holds.
  static let algorithms: Set<String> = ["RS256", "ES256"]

  /// Reads the JWKS file; unreadable or invalid is a config error at `auth.jwt.jwks`.
  init(config: JWTConfig) async throws(ConfigError) {
    self.config = config
    guard let file = SmallFile.read(config.jwks) else {
      throw ConfigError(path: "auth.jwt.jwks", "cannot read the JWKS file \(config.jwks)")
    }
    keys = JWTKeyCollection()
    let object = (try? JSONSerialization.jsonObject(with: Data(file.bytes))) as? [String: Any]
    let list = object?["keys"] as? [[String: Any]] ?? []
    kids = Set(list.compactMap { $0["kid"] as? String })
    guard !list.isEmpty, kids.count == list.count else {
      throw ConfigError(path: "auth.jwt.jwks", "\(config.jwks): expected {\"keys\": [...]} with a kid on every key")
    }
    do {
      try await keys.add(jwksJSON: String(decoding: file.bytes, as: UTF8.self))
      await keys.clearDefault()
    } catch {
      throw ConfigError(path: "auth.jwt.jwks", "\(config.jwks) is not a valid JWKS: \(error)")
    }
  }

  /// Three non-empty dot-separated base64url parts.
  static func looksLikeJWT(_ token: String) -> Bool {
    let parts = token.split(separator: ".", omittingEmptySubsequences: false)
    func base64url(_ c: Character) -> Bool {
      c.isASCII && (c.isLetter || c.isNumber || c == "-" || c == "_")
    }
    return parts.count == 3 && parts.allSatisfy { !$0.isEmpty && $0.allSatisfy(base64url) }
  }

  /// The principal the JWT names, or UNAUTHENTICATED saying why not.
  func principal(for token: String) async throws -> String {
    func refuse(_ why: String) -> RPCError { RPCError(.unauthenticated, "the JWT is not valid: \(why)") }
    guard let header = Self.header(token), let alg = header["alg"] as? String else {
      throw refuse("its header is not readable")
    }
    guard Self.algorithms.contains(alg) else {
      throw refuse("algorithm \"\(alg)\" is not accepted (RS256, ES256)")
    }
    guard let kid = header["kid"] as? String else { throw refuse("its header has no kid") }
    guard kids.contains(kid) else { throw refuse("unknown key id (kid)") }
    let claims: BearerClaims
    do {
      claims = try await keys.verify(token, as: BearerClaims.self)
    } catch let error as JWTError {
      switch error.errorType {
      case .unknownKID: throw refuse("unknown key id (kid)")
      case .signatureVerificationFailed: throw refuse("bad signature")
      case .claimVerificationFailure: throw refuse(error.reason ?? "a claim failed verification")
      default: throw refuse("\(error.errorType)")
      }
    } catch {
      throw refuse("malformed or missing claims (exp is required)")
    }
    guard let aud = claims.aud, aud.value.contains(config.audience) else {
      throw refuse("aud does not name \"\(config.audience)\"")
    }
    if let issuer = config.issuer, claims.iss?.value != issuer {
      throw refuse("iss is not \"\(issuer)\"")
    }
    guard let principal = claims.strings[config.principalClaim], !principal.isEmpty else {
      throw refuse("no string claim \"\(config.principalClaim)\"")
    }
    return principal
  }

  private static func header(_ token: String) -> [String: Any]? {
    guard let first = token.split(separator: ".").first else { return nil }
    var text = first.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
    text += String(repeating: "=", count: (4 - text.count % 4) % 4)
    guard let data = Data(base64Encoded: text) else { return nil }
    return (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
  }
}

/// The claims Apus reads: `exp` (required), `nbf`, `aud`, `iss`, and every string claim for
/// `principal_claim`.
struct BearerClaims: JWTPayload {
  var exp: ExpirationClaim
  var nbf: NotBeforeClaim?
  var aud: AudienceClaim?
  var iss: IssuerClaim?
  var strings: [String: String]

  private struct Key: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(_ s: String) { stringValue = s }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
  }

  init(from decoder: any Decoder) throws {
    let c = try decoder.container(keyedBy: Key.self)
    exp = try c.decode(ExpirationClaim.self, forKey: Key("exp"))
    nbf = try c.decodeIfPresent(NotBeforeClaim.self, forKey: Key("nbf"))
    aud = try c.decodeIfPresent(AudienceClaim.self, forKey: Key("aud"))
    iss = try c.decodeIfPresent(IssuerClaim.self, forKey: Key("iss"))
    var strings: [String: String] = [:]
    for key in c.allKeys {
      if let s = try? c.decode(String.self, forKey: key) { strings[key.stringValue] = s }
    }
    self.strings = strings
  }

  func encode(to encoder: any Encoder) throws {
    var c = encoder.container(keyedBy: Key.self)
    for (k, v) in strings { try c.encode(v, forKey: Key(k)) }
    try c.encode(exp, forKey: Key("exp"))
    try c.encodeIfPresent(nbf, forKey: Key("nbf"))
    try c.encodeIfPresent(aud, forKey: Key("aud"))
  }

  func verify(using algorithm: some JWTAlgorithm) async throws {
    try exp.verifyNotExpired()
    try nbf?.verifyNotBefore()
  }
}
