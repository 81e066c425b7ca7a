/// Something a principal may do. Instance permissions (`read`, `write`, `write_ac`,
/// `execute`) are granted under `auth.instances`, `worker` under `auth.schedulers`, and
/// `admin` by `auth.admin`.
public enum Permission: String, Sendable, Hashable, CaseIterable, Comparable {
  /// CAS and action cache reads: FindMissingBlobs, BatchReadBlobs, ByteStream Read and
  /// QueryWriteStatus, GetTree, GetActionResult, GetCapabilities.
  case read
  /// CAS uploads: BatchUpdateBlobs, ByteStream Write.
  case write
  /// UpdateActionResult (an instance's `action_cache_updates: false` still refuses it).
  case writeAC = "write_ac"
  /// Execute, WaitExecution and the Operations calls.
  case execute
  /// Connecting a worker to a scheduler's WorkerAPI.
  case worker
  /// Global: the admin listener's /metrics, /status and /drain.
  case admin

  /// The permissions an `auth.instances` entry may grant.
  public static let instancePermissions: [Permission] = [.read, .write, .writeAC, .execute]

  public static func < (a: Permission, b: Permission) -> Bool {
    allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
  }
}

/// `auth`: who a caller is (bearer tokens, client certificates) and what each principal may
/// do per instance. Without this block every call is allowed, as before.
///
/// A call with no credentials is the principal `anonymous`. Whatever `anonymous` is granted
/// every authenticated principal has too. An instance's entries add to the `*` entries
/// (the grants are the union), they never take `*` grants away.
public struct AuthConfig: Sendable, Equatable, Decodable {
  /// How the client certificate of an mTLS connection names its principal.
  public enum CertificatePrincipal: String, Sendable, Equatable, CaseIterable {
    /// The subject's common name.
    case cn
    /// The first DNS subject alternative name, else the first URI one.
    case san
  }

  /// Key `tokens`: the token file, lines `<sha256 hex of the token> <principal>` with `#`
  /// comments (`apus token --principal NAME` makes both). Read at start (unreadable: a
  /// config error) and again when its modification time or size changes, checked at most
  /// once a second. nil: bearer tokens are refused as invalid.
  public var tokens: String?
  /// Key `jwt`: JWT bearer tokens checked against a JWKS file; nil: no JWTs.
  public var jwt: JWTConfig?
  /// Key `certificate_principal`: `cn` (default) or `san`.
  public var certificatePrincipal: CertificatePrincipal
  /// Key `instances`: instance name (`*` for every instance) → principal → permissions.
  public var instances: [String: [String: Set<Permission>]]
  /// Key `schedulers`: scheduler name → principal → permissions (only `worker`).
  public var schedulers: [String: [String: Set<Permission>]]
  /// Key `admin`: principals holding the global `admin` permission.
  public var admin: Set<String>

  /// The principal name of calls without credentials.
  public static let anonymous = "anonymous"

  public init(
    tokens: String? = nil, jwt: JWTConfig? = nil, certificatePrincipal: CertificatePrincipal = .cn,
    instances: [String: [String: Set<Permission>]] = [:],
    schedulers: [String: [String: Set<Permission>]] = [:], admin: Set<String> = []
  ) {
    self.tokens = tokens
    self.jwt = jwt
    self.certificatePrincipal = certificatePrincipal
    self.instances = instances
    self.schedulers = schedulers
    self.admin = admin
  }

  public init(from decoder: any Decoder) throws {
    let o = try ConfigObject(
      decoder, allowedKeys: ["tokens", "jwt", "certificate_principal", "instances", "schedulers", "admin"])
    tokens = try o.string("tokens")
    jwt = try o.decode(JWTConfig.self, "jwt")
    certificatePrincipal = try o.choice("certificate_principal") ?? .cn
    func grants(_ key: String, allowed: [Permission]) throws -> [String: [String: Set<Permission>]] {
      let raw = try o.decode([String: [String: [String]]].self, key) ?? [:]
      var out: [String: [String: Set<Permission>]] = [:]
      for (scope, principals) in raw {
        for (principal, names) in principals {
          var set: Set<Permission> = []
          for (i, name) in names.enumerated() {
            guard let p = Permission(rawValue: name), allowed.contains(p) else {
              throw ConfigError(
                path: o.path(key) + ".\"\(scope)\".\"\(principal)\"[\(i)]",
                "expected one of \(allowed.map(\.rawValue).joined(separator: ", ")), got \"\(name)\"")
            }
            set.insert(p)
          }
          out[scope, default: [:]][principal] = set
        }
      }
      return out
    }
    instances = try grants("instances", allowed: Permission.instancePermissions)
    schedulers = try grants("schedulers", allowed: [.worker])
    admin = Set(try o.strings("admin") ?? [])
  }

  /// What `principal` (nil: no credentials) holds on `instance`: its own and `anonymous`'s
  /// grants under `*` and under the instance's name.
  public func permissions(of principal: String?, instance: String) -> Set<Permission> {
    Self.union(instances["*"], instances[instance], principal)
  }

  /// What `principal` holds on the scheduler named `scheduler`.
  public func permissions(of principal: String?, scheduler: String) -> Set<Permission> {
    Self.union(schedulers[scheduler], nil, principal)
  }

  private static func union(
    _ a: [String: Set<Permission>]?, _ b: [String: Set<Permission>]?, _ principal: String?
  ) -> Set<Permission> {
    var out: Set<Permission> = []
    for scope in [a, b] {
      guard let scope else { continue }
      out.formUnion(scope[anonymous] ?? [])
      if let principal { out.formUnion(scope[principal] ?? []) }
    }
    return out
  }
}

/// `auth.jwt`: a bearer value shaped like a JWT (three dot-separated base64url parts) is
/// verified as one: signed (RS256 or ES256) by a key of the JWKS file, chosen by its `kid`;
/// `exp` present and not past; `nbf`, if present, reached; `aud` naming `audience`; `iss`
/// equal to `issuer` if that is set. Its principal is the string claim `principal_claim`.
public struct JWTConfig: Sendable, Equatable, Decodable {
  /// Key `jwks`: path of the JWKS file (`{"keys": [...]}`), read at start (required).
  public var jwks: String
  /// Key `audience`: what `aud` must contain (required).
  public var audience: String
  /// Key `issuer`: what `iss` must be; nil: any.
  public var issuer: String?
  /// Key `principal_claim`: the claim naming the principal (default `sub`).
  public var principalClaim: String

  public init(jwks: String, audience: String, issuer: String? = nil, principalClaim: String = "sub") {
    self.jwks = jwks
    self.audience = audience
    self.issuer = issuer
    self.principalClaim = principalClaim
  }

  public init(from decoder: any Decoder) throws {
    let o = try ConfigObject(decoder, allowedKeys: ["jwks", "audience", "issuer", "principal_claim"])
    jwks = try o.requiredString("jwks")
    audience = try o.requiredString("audience")
    issuer = try o.string("issuer")
    principalClaim = try o.string("principal_claim") ?? "sub"
  }
}
