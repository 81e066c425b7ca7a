import Foundation

/// `schedulers.NAME.state.postgres`: the database holding a scheduler's shared state.
///
/// Keys: `url` (required, `postgres://user:password@host:port/database?sslmode=…`; a
/// password in it must be percent-encoded), `password` (optional, taken as written, overrides
/// the URL's unless empty: `"password": "${PGPASSWORD}"` keeps it out of the file), `max_connections`
/// (default 10, per process), `lease_seconds` (default 30: how long a worker's actions stay
/// assigned after its scheduler stops renewing them, e.g. when that process died),
/// `poll_interval_milliseconds` (default 1000: the fallback for missed notifications), and
/// `query_timeout_seconds` (default 5: a statement or connection slower than this counts as
/// the database being unavailable).
public struct PostgresStateConfig: Sendable, Equatable, Decodable {
  /// How TLS is used, as libpq's `sslmode`.
  public enum SSLMode: String, Sendable, Equatable, CaseIterable {
    case disable, allow, prefer, require
    case verifyCA = "verify-ca"
    case verifyFull = "verify-full"
  }

  public var host: String
  public var port: Int
  public var user: String
  public var password: String?
  public var database: String
  public var sslMode: SSLMode
  /// `sslrootcert`: trust roots (PEM) for `verify-ca` / `verify-full`; the system's if nil.
  public var sslRootCertificate: String?
  public var maxConnections: Int
  public var leaseSeconds: Int
  public var pollIntervalMilliseconds: Int
  public var queryTimeoutSeconds: Int

  public init(
    host: String, port: Int = 5432, user: String, password: String? = nil, database: String,
    sslMode: SSLMode = .prefer, sslRootCertificate: String? = nil, maxConnections: Int = 10,
    leaseSeconds: Int = 30, pollIntervalMilliseconds: Int = 1000, queryTimeoutSeconds: Int = 5
  ) {
    self.host = host
    self.port = port
    self.user = user
    self.password = password
    self.database = database
    self.sslMode = sslMode
    self.sslRootCertificate = sslRootCertificate
    self.maxConnections = maxConnections
    self.leaseSeconds = leaseSeconds
    self.pollIntervalMilliseconds = pollIntervalMilliseconds
    self.queryTimeoutSeconds = queryTimeoutSeconds
  }

  /// `host:port/database`, for messages and logs (never the password).
  public var displayName: String { "\(host):\(port)/\(database)" }

  public init(from decoder: any Decoder) throws {
    let o = try ConfigObject(
      decoder,
      allowedKeys: ["url", "password", "max_connections", "lease_seconds", "poll_interval_milliseconds", "query_timeout_seconds"])
    let url = try o.requiredString("url")
    switch Self.parse(url) {
    case .success(let parsed): self = parsed
    case .failure(let e): throw o.error("url", e.message)
    }
    if let password = try o.string("password"), !password.isEmpty { self.password = password }
    maxConnections = Int(try o.integer("max_connections") ?? 10)
    leaseSeconds = Int(try o.integer("lease_seconds") ?? 30)
    pollIntervalMilliseconds = Int(try o.integer("poll_interval_milliseconds") ?? 1000)
    queryTimeoutSeconds = Int(try o.integer("query_timeout_seconds") ?? 5)
  }

  /// Why a URL was refused.
  public struct URLError: Error, Equatable {
    public var message: String
  }

  /// Parses `postgres://` / `postgresql://` URLs: user (required), password, host, port
  /// (5432), database (the user's name if absent), and the `sslmode` and `sslrootcert`
  /// query parameters. Other parameters are refused rather than silently ignored.
  public static func parse(_ url: String) -> Result<PostgresStateConfig, URLError> {
    func fail(_ m: String) -> Result<PostgresStateConfig, URLError> {
      .failure(URLError(message: m + " (expected postgres://user:password@host:port/database?sslmode=require)"))
    }
    guard let parts = URLComponents(string: url) else { return fail("not a URL") }
    guard parts.scheme == "postgres" || parts.scheme == "postgresql" else {
      return fail("the scheme must be postgres or postgresql, got \"\(parts.scheme ?? "")\"")
    }
    guard let host = parts.host, !host.isEmpty else { return fail("no host") }
    guard let user = parts.user, !user.isEmpty else { return fail("no user") }
    var database = String(parts.path.drop { $0 == "/" })
    if database.isEmpty { database = user }
    var config = PostgresStateConfig(
      host: host, port: parts.port ?? 5432, user: user.removingPercentEncoding ?? user,
      password: parts.password.map { $0.removingPercentEncoding ?? $0 }, database: database)
    for item in parts.queryItems ?? [] {
      switch item.name {
      case "sslmode":
        guard let mode = SSLMode(rawValue: item.value ?? "") else {
          return fail(
            "sslmode must be one of \(SSLMode.allCases.map(\.rawValue).joined(separator: ", ")), got \"\(item.value ?? "")\"")
        }
        config.sslMode = mode
      case "sslrootcert":
        config.sslRootCertificate = item.value
      default:
        return fail("unknown parameter \"\(item.name)\"; known: sslmode, sslrootcert")
      }
    }
    return .success(config)
  }
}
