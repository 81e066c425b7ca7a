import ApusConfig
import ApusRPC
import ApusTestSupport
import Foundation
import JWTKit
import Logging
import Testing

@testable import ApusServices

@Suite("JWT bearer tokens", .timeLimit(.minutes(3)))
struct JWTVerifierTests {
  struct Claims: JWTPayload {
    var sub: SubjectClaim
    var aud: AudienceClaim
    var exp: ExpirationClaim
    var nbf: NotBeforeClaim?
    var iss: IssuerClaim?
    func verify(using algorithm: some JWTAlgorithm) async throws {}
  }

  let key = ES256PrivateKey()
  let other = ES256PrivateKey()

  /// A JWKS file holding `key`'s public half as kid "k1".
  func jwksFile() throws -> String {
    let (x, y) = try #require(key.publicKey.parameters)
    let json = #"{"keys":[{"kty":"EC","crv":"P-256","x":"\#(x)","y":"\#(y)","kid":"k1","alg":"ES256","use":"sig"}]}"#
    let path = temporaryDirectory("apus-jwks") + "/jwks.json"
    try json.write(toFile: path, atomically: true, encoding: .utf8)
    return path
  }

  func token(
    signer: ES256PrivateKey? = nil, kid: String = "k1", aud: String = "apus", expiresIn: TimeInterval = 600,
    notBefore: TimeInterval? = nil, iss: String? = nil
  ) async throws -> String {
    let keys = JWTKeyCollection()
    await keys.add(ecdsa: signer ?? key, kid: JWKIdentifier(string: kid))
    let claims = Claims(
      sub: "alice", aud: AudienceClaim(value: [aud]), exp: .init(value: Date().addingTimeInterval(expiresIn)),
      nbf: notBefore.map { .init(value: Date().addingTimeInterval($0)) }, iss: iss.map { .init(value: $0) })
    return try await keys.sign(claims, kid: JWKIdentifier(string: kid))
  }

  func authorizer(issuer: String? = nil) async throws -> Authorizer {
    try await Authorizer(
      config: AuthConfig(jwt: JWTConfig(jwks: try jwksFile(), audience: "apus", issuer: issuer)),
      logger: Logger(label: "test"))
  }

  func authenticate(_ auth: Authorizer, _ token: String) async -> Result<String?, RPCError> {
    let context = ServerContext(
      path: "/x", metadata: Metadata([("authorization", "Bearer \(token)")]), deadline: nil, peer: "test")
    do {
      return .success(try await auth.authenticate(context))
    } catch let error as RPCError {
      return .failure(error)
    } catch {
      return .failure(RPCError(.unknown, "\(error)"))
    }
  }

  func refusal(_ result: Result<String?, RPCError>) -> String? {
    guard case .failure(let e) = result, e.code == .unauthenticated else { return nil }
    return e.message
  }

  @Test("a JWT signed by a JWKS key is accepted; its sub is the principal")
  func accepted() async throws {
    let auth = try await authorizer()
    #expect(try await authenticate(auth, try await token()).get() == "alice")
    #expect(JWTVerifier.looksLikeJWT(try await token()))
    #expect(!JWTVerifier.looksLikeJWT("plain-token"))
  }

  @Test("expired, not yet valid, wrong audience, wrong issuer, unknown kid, wrong key: refused")
  func refused() async throws {
    let auth = try await authorizer()
    #expect(refusal(await authenticate(auth, try await token(expiresIn: -60)))?.contains("exp") == true)
    #expect(refusal(await authenticate(auth, try await token(notBefore: 600))) != nil)
    #expect(refusal(await authenticate(auth, try await token(aud: "other")))?.contains("aud") == true)
    #expect(refusal(await authenticate(auth, try await token(kid: "k2")))?.contains("kid") == true)
    #expect(refusal(await authenticate(auth, try await token(signer: other))) != nil)
    let strict = try await authorizer(issuer: "https://issuer")
    #expect(refusal(await authenticate(strict, try await token(iss: "https://else")))?.contains("iss") == true)
    #expect(try await authenticate(strict, try await token(iss: "https://issuer")).get() == "alice")
    // An unsigned token, and no token text in the message.
    let unsigned = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.c2ln"
    let message = refusal(await authenticate(auth, unsigned))
    #expect(message?.contains("\"none\"") == true)
    #expect(message?.contains(unsigned) == false)
  }

  @Test("an unreadable JWKS file is a config error")
  func missingJWKS() async {
    await #expect(throws: ConfigError.self) {
      _ = try await Authorizer(
        config: AuthConfig(jwt: JWTConfig(jwks: "/nonexistent/jwks.json", audience: "apus")),
        logger: Logger(label: "test"))
    }
  }
}
