import ApusConfig
import ApusRPC
import Synchronization

/// What a worker's connections present: the TLS trust roots and client certificate of
/// `workers[].tls` and the bearer token of `token_file`. Read at start, and again when one of
/// the files changes or on SIGHUP; connections made afterwards use the new ones.
final class WorkerCredentials: Sendable {
  let tls: ClientTLSConfig?
  let tokenFile: String?
  /// Whether any configured URL is `grpcs://` (else no TLS context is built).
  let needsTLS: Bool
  private struct Loaded {
    var clientTLS: ClientTLS?
    var metadata: [(String, String)]
    var stamps: [FileStamp?]
  }
  private let loaded: Mutex<Loaded>
  /// The last failed reload's error, so a broken file is reported once, not every check.
  private let failure = Mutex<String?>(nil)

  init(_ config: WorkerConfig) throws {
    tls = config.tls
    tokenFile = config.tokenFile
    needsTLS = (config.schedulers + [config.cas]).contains { $0.hasPrefix("grpcs://") }
    loaded = Mutex(try Self.load(tls: tls, tokenFile: tokenFile, needsTLS: needsTLS))
  }

  private var paths: [String] {
    [tls?.ca, tls?.certificate, tls?.privateKey, tokenFile].compactMap { $0 }
  }

  private static func load(tls: ClientTLSConfig?, tokenFile: String?, needsTLS: Bool) throws -> Loaded {
    // Stamps first: a file replaced while it is read is seen as changed at the next check.
    let stamps = [tls?.ca, tls?.certificate, tls?.privateKey, tokenFile].compactMap { $0 }.map(FileStamp.init(path:))
    let clientTLS = try needsTLS
      ? ClientTLS(ca: tls?.ca, certificate: tls?.certificate, privateKey: tls?.privateKey, serverName: tls?.serverName)
      : nil
    let metadata = try tokenFile.map(BearerToken.metadata(fromFile:)) ?? []
    return Loaded(clientTLS: clientTLS, metadata: metadata, stamps: stamps)
  }

  /// Options for dialing `url` (its scheme decides TLS); `serverName` is the host name an
  /// endpoint's address came from, checked against the certificate unless `tls.server_name`
  /// says otherwise.
  func options(for url: String, serverName: String? = nil) -> GRPCServerOptions {
    let (clientTLS, metadata) = loaded.withLock { ($0.clientTLS, $0.metadata) }
    var options = GRPCServerOptions()
    options.callMetadata = metadata
    if url.hasPrefix("grpcs://"), var clientTLS {
      if clientTLS.serverName == nil { clientTLS.serverName = serverName }
      options.clientTLS = clientTLS
    }
    return options
  }

  /// Reads the files again if one changed since the last load (or always, with `force`).
  /// Returns whether it did; throws, keeping what was loaded, when they do not load (a
  /// rotation caught half-written is tried again at the next check; the same error is
  /// thrown only once).
  func reload(force: Bool) throws -> Bool {
    let stamps = paths.map(FileStamp.init(path:))
    guard force || loaded.withLock({ $0.stamps != stamps }) else { return false }
    let fresh: Loaded
    do {
      fresh = try Self.load(tls: tls, tokenFile: tokenFile, needsTLS: needsTLS)
    } catch {
      let text = "\(error)"
      let repeated = failure.withLock { last in
        defer { last = text }
        return last == text
      }
      if repeated && !force { return false }
      throw error
    }
    failure.withLock { $0 = nil }
    loaded.withLock { $0 = fresh }
    return true
  }
}
