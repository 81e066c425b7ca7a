import ApusConfig
import NIOSSL
import PostgresNIO

extension PostgresClient.Configuration {
  /// The client settings for a scheduler's `state.postgres` block; TLS as libpq's `sslmode`
  /// would use it (`prefer`/`allow`/`require` encrypt without verifying, as libpq does;
  /// `verify-ca` checks the chain; `verify-full` also the host name).
  init(_ config: PostgresStateConfig) throws {
    var tls = TLSConfiguration.makeClientConfiguration()
    if let roots = config.sslRootCertificate {
      tls.trustRoots = .file(roots)
    }
    let mode: PostgresClient.Configuration.TLS
    switch config.sslMode {
    case .disable:
      mode = .disable
    case .allow, .prefer:
      tls.certificateVerification = .none
      mode = .prefer(tls)
    case .require:
      tls.certificateVerification = .none
      mode = .require(tls)
    case .verifyCA:
      tls.certificateVerification = .noHostnameVerification
      mode = .require(tls)
    case .verifyFull:
      tls.certificateVerification = .fullVerification
      mode = .require(tls)
    }
    self.init(
      host: config.host, port: config.port, username: config.user, password: config.password,
      database: config.database, tls: mode)
    options.maximumConnections = config.maxConnections
    options.minimumConnections = 1
    options.connectTimeout = .seconds(config.queryTimeoutSeconds)
    options.keepAliveBehavior = .init(frequency: .seconds(10))
  }
}
