#if canImport(Glibc)
  import Glibc
#endif

/// One address a worker can register at: a configured scheduler URL, or one of the addresses
/// its host name resolves to (TLS still checks the certificate against the name).
struct SchedulerEndpoint: Sendable, Equatable, CustomStringConvertible {
  /// The URL as configured, for logs and `/status`.
  var url: String
  /// What to dial: an IP address, or the URL's host when it did not resolve.
  var host: String
  var port: Int
  /// The URL's host when `host` is one of its addresses: SNI and certificate checks use it.
  var serverName: String?

  var description: String {
    serverName == nil ? url : "\(url) (\(host.contains(":") ? "[\(host)]" : host):\(port))"
  }

  /// `grpc://host:port` or `grpcs://host:port` → (host, port, tls); nil if malformed.
  static func parse(_ url: String) -> (host: String, port: Int, tls: Bool)? {
    var rest = Substring(url)
    let tls: Bool
    if rest.hasPrefix("grpc://") {
      rest = rest.dropFirst(7)
      tls = false
    } else if rest.hasPrefix("grpcs://") {
      rest = rest.dropFirst(8)
      tls = true
    } else {
      return nil
    }
    guard let colon = rest.lastIndex(of: ":"), let port = Int(rest[rest.index(after: colon)...]),
      (1...65535).contains(port), !rest[..<colon].isEmpty
    else { return nil }
    var host = String(rest[..<colon])
    if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
    return (host, port, tls)
  }

  /// The endpoints of `url`: one per address its host resolves to (in the resolver's order,
  /// duplicates dropped), or the URL itself when the host is an IP address or does not
  /// resolve (dialing it then reports why). Blocks on DNS: call it off the event loops.
  static func resolve(_ url: String) -> [SchedulerEndpoint] {
    guard let (host, port, _) = parse(url) else { return [] }
    let literal = SchedulerEndpoint(url: url, host: host, port: port, serverName: nil)
    if isIPAddress(host) { return [literal] }
    var hints = addrinfo()
    hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
    hints.ai_flags = AI_ADDRCONFIG
    var list: UnsafeMutablePointer<addrinfo>?
    guard getaddrinfo(host, nil, &hints, &list) == 0, let first = list else { return [literal] }
    defer { freeaddrinfo(first) }
    var addresses: [String] = []
    var next: UnsafeMutablePointer<addrinfo>? = first
    while let entry = next {
      if let text = numericHost(entry.pointee.ai_addr, entry.pointee.ai_addrlen), !addresses.contains(text) {
        addresses.append(text)
      }
      next = entry.pointee.ai_next
    }
    if addresses.isEmpty { return [literal] }
    return addresses.map { SchedulerEndpoint(url: url, host: $0, port: port, serverName: host) }
  }

  static func isIPAddress(_ host: String) -> Bool {
    var v4 = in_addr(), v6 = in6_addr()
    return inet_pton(AF_INET, host, &v4) == 1 || inet_pton(AF_INET6, host, &v6) == 1
  }

  private static func numericHost(_ address: UnsafeMutablePointer<sockaddr>?, _ length: socklen_t) -> String? {
    guard let address else { return nil }
    var buffer = [CChar](repeating: 0, count: Int(NI_MAXHOST))
    guard getnameinfo(address, length, &buffer, socklen_t(buffer.count), nil, 0, NI_NUMERICHOST) == 0 else { return nil }
    return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
  }
}

/// Which scheduler endpoint a worker tries next: the configured URLs in order, each expanded
/// to its addresses. A broken stream or failed attempt moves to the next endpoint; past the
/// last one the URLs are resolved again, so DNS changes are seen once per round.
struct EndpointRotation: Sendable {
  let urls: [String]
  private(set) var endpoints: [SchedulerEndpoint] = []
  private var position = 0

  init(urls: [String]) { self.urls = urls }

  /// True when ``current`` needs a fresh ``refill(_:)`` first.
  var needsResolving: Bool { position >= endpoints.count }

  /// The endpoint to try now; nil when a new round must be resolved first.
  var current: SchedulerEndpoint? { needsResolving ? nil : endpoints[position] }

  /// Starts a round with freshly resolved endpoints (from ``resolveAll()``).
  mutating func refill(_ endpoints: [SchedulerEndpoint]) {
    self.endpoints = endpoints
    position = 0
  }

  /// Moves on to the next endpoint (after a failure or a broken stream).
  mutating func advance() {
    position += 1
  }

  /// Every URL's endpoints, in configured order.
  func resolveAll(_ resolve: (String) -> [SchedulerEndpoint] = SchedulerEndpoint.resolve) -> [SchedulerEndpoint] {
    urls.flatMap(resolve)
  }
}
