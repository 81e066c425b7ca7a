import NIOSSL
/// The names in a verified client certificate (mTLS), from which the authenticator takes a
/// principal (`auth.certificate_principal`).
public struct ClientCertificateNames: Sendable, Equatable {
  /// The subject's common name.
  public var commonName: String?
  /// DNS subject alternative names, in certificate order.
  public var dnsNames: [String]
  /// URI subject alternative names, in certificate order.
  public var uris: [String]

  public init(commonName: String? = nil, dnsNames: [String] = [], uris: [String] = []) {
    self.commonName = commonName
    self.dnsNames = dnsNames
    self.uris = uris
  }
}

extension ClientCertificateNames {
  /// The names of a verified peer certificate (the admin listener reads them itself).
  public init(_ certificate: NIOSSLCertificate) { self = TLSHandshakeGuard.names(certificate) }
}
