/// Top-level `admin`: the operator's HTTP/1.1 listener (metrics, health, status feed,
/// status page, drain). Absent: no such listener. See docs/operations.md.
///
/// - `listen` (`127.0.0.1:9090`): host:port; loopback by default, as it reports on
///   everything the process does.
/// - `tls`: serve HTTPS with these files (same keys as `servers[].tls`; a client certificate
///   is a principal for `auth` like on the gRPC listeners).
/// - `anonymous_read` (false): with `auth`, let anyone read `/metrics` and `/status`
///   (Prometheus without a token); `/drain` always needs the `admin` permission.
public struct AdminConfig: Sendable, Equatable, Decodable {
  public var listen: String
  public var tls: ListenerTLSConfig?
  public var anonymousRead: Bool

  public static let defaultListen = "127.0.0.1:9090"

  public init(listen: String = Self.defaultListen, tls: ListenerTLSConfig? = nil, anonymousRead: Bool = false) {
    self.listen = listen
    self.tls = tls
    self.anonymousRead = anonymousRead
  }

  public init(from decoder: any Decoder) throws {
    let o = try ConfigObject(decoder, allowedKeys: ["listen", "tls", "anonymous_read"])
    listen = try o.string("listen") ?? Self.defaultListen
    guard ServerConfig.splitHostPort(listen) != nil else {
      throw o.error("listen", "expected host:port, got \"\(listen)\"")
    }
    tls = try o.decode(ListenerTLSConfig.self, "tls")
    anonymousRead = try o.bool("anonymous_read") ?? false
  }
}
