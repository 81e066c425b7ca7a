import ApusConfig
import ApusRPC

extension GRPCServerOptions {
  /// Client options for dialing `url`: TLS from `tls` for a `grpcs://` URL (the system's
  /// trust store when `tls` is absent).
  public static func dialing(_ url: String, tls: ClientTLSConfig?) throws -> GRPCServerOptions {
    var options = GRPCServerOptions()
    if GRPCURL.check(url).grpcs {
      options.clientTLS = try ClientTLS(
        ca: tls?.ca, certificate: tls?.certificate, privateKey: tls?.privateKey, serverName: tls?.serverName)
    }
    return options
  }
}
