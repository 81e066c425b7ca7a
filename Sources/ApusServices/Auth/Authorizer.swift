import ApusConfig
import ApusRPC
import Logging

/// Who a call comes from (bearer token or JWT, else client certificate, else anonymous) and
/// whether `auth` lets them do what the method needs. Services ask it once per call through
/// the registration helpers (see `RouterRegistration.swift`) before touching any store.
public final class Authorizer: Sendable {
  public let config: AuthConfig
  private let tokens: TokenStore?
  private let jwt: JWTVerifier?

  /// Reads the token file and the JWKS file; one that cannot be read is a config error at
  /// `auth.tokens` or `auth.jwt.jwks`.
  public init(config: AuthConfig, logger: Logger) async throws(ConfigError) {
    self.config = config
    tokens = try config.tokens.map { path throws(ConfigError) in try TokenStore(path: path, logger: logger) }
    if let jwt = config.jwt {
      self.jwt = try await JWTVerifier(config: jwt)
    } else {
      self.jwt = nil
    }
  }

  /// The caller's principal, nil for a call without credentials. Credentials that do not
  /// check out are UNAUTHENTICATED, whatever `anonymous` may do. The token never appears in
  /// an error.
  public func authenticate(_ context: ServerContext) async throws -> String? {
    if let header = context.metadata["authorization"] {
      let scheme = "bearer "
      guard header.count > scheme.count, header.prefix(scheme.count).lowercased() == scheme else {
        throw RPCError(.unauthenticated, "the authorization header is not \"Bearer <token>\"")
      }
      let token = String(header.dropFirst(scheme.count)).trimmingWhitespace
      if let jwt, JWTVerifier.looksLikeJWT(token) {
        return try await jwt.principal(for: token)
      }
      guard let tokens, let principal = tokens.principal(for: token) else {
        throw RPCError(.unauthenticated, "the bearer token is not valid (unknown or revoked)")
      }
      return principal
    }
    if let certificate = context.clientCertificate {
      let name: String? =
        switch config.certificatePrincipal {
        case .cn: certificate.commonName
        case .san: certificate.dnsNames.first ?? certificate.uris.first
        }
      guard let name, !name.isEmpty else {
        let missing =
          config.certificatePrincipal == .cn ? "common name" : "DNS or URI subject alternative name"
        throw RPCError(.unauthenticated, "the client certificate has no \(missing)")
      }
      return name
    }
    return nil
  }

  /// Throws unless `principal` holds `permission` on `instance`.
  public func authorize(_ principal: String?, _ permission: Permission, instance: String) throws {
    guard !config.permissions(of: principal, instance: instance).contains(permission) else { return }
    throw Self.refusal(principal, permission, "instance \"\(instance)\"")
  }

  /// Throws unless `principal` holds `permission` on at least one of `instances` (for calls
  /// naming an operation whose instance is gone).
  public func authorize(_ principal: String?, _ permission: Permission, anyOf instances: [String]) throws {
    for instance in instances where config.permissions(of: principal, instance: instance).contains(permission) {
      return
    }
    throw Self.refusal(principal, permission, "any instance")
  }

  /// Throws unless `principal` may connect workers to the scheduler named `scheduler`.
  public func authorize(_ principal: String?, scheduler: String) throws {
    guard !config.permissions(of: principal, scheduler: scheduler).contains(.worker) else { return }
    throw Self.refusal(principal, .worker, "scheduler \"\(scheduler)\"")
  }

  /// Throws unless `principal` holds the global `admin` permission (`auth.admin`), for the
  /// admin listener's /metrics, /status and /drain.
  public func authorizeAdmin(_ principal: String?) throws {
    guard let principal, config.admin.contains(principal) else {
      throw Self.refusal(principal, .admin, "this server")
    }
  }

  static func refusal(_ principal: String?, _ permission: Permission, _ scope: String) -> RPCError {
    guard let principal else {
      return RPCError(
        .unauthenticated, "credentials required: anonymous calls lack \"\(permission.rawValue)\" on \(scope)")
    }
    return RPCError(.permissionDenied, "principal \"\(principal)\" lacks \"\(permission.rawValue)\" on \(scope)")
  }
}

extension String {
  var trimmingWhitespace: String {
    String(drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed())
  }
}
