/// `servers[].tls`: the listener speaks gRPC over TLS 1.2+ with ALPN `h2`.
///
/// - `certificate`, `private_key` (required): PEM files. Both are read again when either
///   file changes (checked every 2 s) or on SIGHUP; new connections get the new pair, open
///   ones keep theirs, so short-lived certificates (ACME, cert-manager, Vault) just work.
/// - `client_ca`: PEM bundle of the CAs client certificates must chain to.
/// - `client_auth` (`none`): `optional` verifies a certificate when the client sends one;
///   `require` refuses a handshake without a valid one. Both need `client_ca`.
public struct ListenerTLSConfig: Sendable, Equatable, Decodable {
  public enum ClientAuth: String, Sendable, Equatable, CaseIterable {
    case none, optional, require
  }

  public var certificate: String
  public var privateKey: String
  public var clientCA: String?
  public var clientAuth: ClientAuth

  public init(certificate: String, privateKey: String, clientCA: String? = nil, clientAuth: ClientAuth = .none) {
    self.certificate = certificate
    self.privateKey = privateKey
    self.clientCA = clientCA
    self.clientAuth = clientAuth
  }

  public init(from decoder: any Decoder) throws {
    let o = try ConfigObject(decoder, allowedKeys: ["certificate", "private_key", "client_ca", "client_auth"])
    certificate = try o.requiredString("certificate")
    privateKey = try o.requiredString("private_key")
    clientCA = try o.string("client_ca")
    clientAuth = try o.choice("client_auth") ?? .none
    if clientAuth != .none && clientCA == nil {
      throw o.error(
        "client_ca", "is required with client_auth \(clientAuth.rawValue): the CAs client certificates must chain to")
    }
  }
}

/// `tls` of a connection Apus makes (a worker to its scheduler and CAS, a `grpc` store) to a
/// `grpcs://` URL.
///
/// - `ca`: PEM bundle of the CAs the server's certificate must chain to (default: the
///   system's trust store).
/// - `certificate`, `private_key`: a client certificate for mTLS (both or neither).
/// - `server_name`: the name checked against the server's certificate and sent as SNI
///   (default: the URL's host).
public struct ClientTLSConfig: Sendable, Equatable, Decodable {
  public var ca: String?
  public var certificate: String?
  public var privateKey: String?
  public var serverName: String?

  public init(ca: String? = nil, certificate: String? = nil, privateKey: String? = nil, serverName: String? = nil) {
    self.ca = ca
    self.certificate = certificate
    self.privateKey = privateKey
    self.serverName = serverName
  }

  public init(from decoder: any Decoder) throws {
    let o = try ConfigObject(decoder, allowedKeys: ["ca", "certificate", "private_key", "server_name"])
    ca = try o.string("ca")
    certificate = try o.string("certificate")
    privateKey = try o.string("private_key")
    serverName = try o.string("server_name")
    if (certificate == nil) != (privateKey == nil) {
      throw o.error(certificate == nil ? "certificate" : "private_key", "certificate and private_key go together")
    }
  }
}

/// A `grpc://host:port` or `grpcs://host:port` URL.
public enum GRPCURL {
  /// Whether `url` is well formed; `grpcs` says whether it uses TLS.
  public static func check(_ url: String) -> (valid: Bool, grpcs: Bool) {
    for (scheme, tls) in [("grpc://", false), ("grpcs://", true)] where url.hasPrefix(scheme) {
      return (ServerConfig.splitHostPort(String(url.dropFirst(scheme.count))) != nil, tls)
    }
    return (false, false)
  }
}
