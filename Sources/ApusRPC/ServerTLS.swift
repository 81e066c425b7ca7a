import Logging
import NIOCore
import NIOSSL
import NIOTLS
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// The TLS side of a listener: the context new connections use, built from PEM files and
/// built again when they change, so a rotated certificate reaches new connections while
/// open ones keep theirs. TLS 1.2 or later; ALPN `h2` only.
public final class ServerTLS: Sendable {
  public enum ClientAuth: Sendable, Equatable {
    case none, optional, require
  }

  public struct Files: Sendable, Equatable {
    public var certificate: String
    public var privateKey: String
    public var clientCA: String?

    public init(certificate: String, privateKey: String, clientCA: String?) {
      self.certificate = certificate
      self.privateKey = privateKey
      self.clientCA = clientCA
    }

    var paths: [String] { [certificate, privateKey] + (clientCA.map { [$0] } ?? []) }
  }

  public let files: Files
  public let clientAuth: ClientAuth
  /// ALPN protocols offered: `h2` for gRPC listeners, `http/1.1` for the admin listener.
  public let applicationProtocols: [String]
  /// The last failed reload's error, so a broken file is reported once, not every check.
  private let failure = Mutex<String?>(nil)
  private let current: Mutex<(context: NIOSSLContext, stamps: [FileStamp?])>

  /// Loads the files; throws a readable error when one is missing or not valid PEM.
  public init(files: Files, clientAuth: ClientAuth, applicationProtocols: [String] = ["h2"]) throws {
    self.files = files
    self.clientAuth = clientAuth
    self.applicationProtocols = applicationProtocols
    let stamps = files.paths.map(FileStamp.init(path:))
    current = Mutex((try Self.makeContext(files, clientAuth, applicationProtocols), stamps))
  }

  /// The context for a new connection.
  public var context: NIOSSLContext { current.withLock { $0.context } }

  /// Builds the context again if any file changed since it was loaded (or always, with
  /// `force`: SIGHUP). Returns whether it did; throws, keeping the old context, when the new
  /// files do not load (a half-written rotation is tried again at the next check; the same
  /// error is thrown only once).
  @discardableResult
  public func reload(force: Bool = false) throws -> Bool {
    let stamps = files.paths.map(FileStamp.init(path:))
    guard force || current.withLock({ $0.stamps != stamps }) else { return false }
    let context: NIOSSLContext
    do {
      context = try Self.makeContext(files, clientAuth, applicationProtocols)
    } catch {
      let text = "\(error)"
      let repeated = failure.withLock { last in
        defer { last = text }
        return last == text
      }
      if repeated { return false }
      throw error
    }
    failure.withLock { $0 = nil }
    current.withLock { $0 = (context, stamps) }
    return true
  }

  static func makeContext(_ files: Files, _ clientAuth: ClientAuth, _ protocols: [String]) throws -> NIOSSLContext {
    let chain: [NIOSSLCertificate]
    let key: NIOSSLPrivateKey
    do {
      chain = try NIOSSLCertificate.fromPEMFile(files.certificate)
    } catch {
      throw RPCError(.invalidArgument, "cannot load the certificate \(files.certificate): \(error)")
    }
    guard !chain.isEmpty else {
      throw RPCError(.invalidArgument, "no certificate in \(files.certificate)")
    }
    do {
      key = try NIOSSLPrivateKey(file: files.privateKey, format: .pem)
    } catch {
      // The error names the file, never its content.
      throw RPCError(.invalidArgument, "cannot load the private key \(files.privateKey): \(error)")
    }
    var config = TLSConfiguration.makeServerConfiguration(
      certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
    config.minimumTLSVersion = .tlsv12
    config.applicationProtocols = protocols
    if let ca = files.clientCA {
      do {
        config.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(ca))
      } catch {
        throw RPCError(.invalidArgument, "cannot load the client CA bundle \(ca): \(error)")
      }
    }
    switch clientAuth {
    case .none: config.certificateVerification = .none
    case .optional: config.certificateVerification = .optionalVerification
    case .require: config.certificateVerification = .noHostnameVerification
    }
    do {
      return try NIOSSLContext(configuration: config)
    } catch {
      throw RPCError(
        .invalidArgument, "the certificate \(files.certificate) and key \(files.privateKey) do not make a TLS context: \(error)")
    }
  }
}

/// TLS for connections Apus makes: trust roots, an optional client certificate, and the
/// name the server's certificate must carry.
public struct ClientTLS: Sendable {
  let context: NIOSSLContext
  /// Sent as SNI and checked against the certificate; nil: the URL's host.
  public var serverName: String?

  public init(ca: String?, certificate: String?, privateKey: String?, serverName: String?) throws {
    var config = TLSConfiguration.makeClientConfiguration()
    config.minimumTLSVersion = .tlsv12
    config.applicationProtocols = ["h2"]
    do {
      if let ca { config.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(ca)) }
      if let certificate, let privateKey {
        config.certificateChain = try NIOSSLCertificate.fromPEMFile(certificate).map { .certificate($0) }
        config.privateKey = .privateKey(try NIOSSLPrivateKey(file: privateKey, format: .pem))
      }
      context = try NIOSSLContext(configuration: config)
    } catch {
      throw RPCError(.invalidArgument, "cannot set up TLS (ca \(ca ?? "system"), certificate \(certificate ?? "none")): \(error)")
    }
    self.serverName = serverName
  }
}

/// Identifies a file's version: a rename onto it (how cert-manager and certbot rotate)
/// changes the inode, an edit in place the size or modification time.
public struct FileStamp: Equatable, Sendable {
  var inode: UInt64
  var size: Int64
  var modified: Int64

  public init?(path: String) {
    var st = stat()
    guard stat(path, &st) == 0 else { return nil }
    inode = UInt64(st.st_ino)
    size = Int64(st.st_size)
    modified = Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec)
  }
}

/// Sits after the TLS handler: closes a connection whose client did not negotiate ALPN
/// `h2` (an HTTP/1.1 client, a probe) and logs failed handshakes, then steps aside.
final class TLSHandshakeGuard: ChannelInboundHandler, RemovableChannelHandler {
  typealias InboundIn = ByteBuffer
  typealias InboundOut = ByteBuffer

  private let logger: Logger
  private var done = false

  init(logger: Logger) { self.logger = logger }

  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    if case .handshakeCompleted(let proto)? = event as? TLSUserEvent {
      done = true
      guard proto == "h2" else {
        logger.notice(
          "TLS client did not offer ALPN h2; closing (gRPC needs HTTP/2)",
          metadata: ["peer": "\(context.remoteAddress.map { "\($0)" } ?? "?")", "alpn": "\(proto ?? "none")"])
        context.close(promise: nil)
        return
      }
      context.fireUserInboundEventTriggered(event)
      // A certificate is only there once verified (client_auth optional or require).
      if let certificate = try? context.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self).peerCertificate {
        context.fireUserInboundEventTriggered(ClientCertificateEvent(names: Self.names(certificate)))
      }
      context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
      return
    }
    context.fireUserInboundEventTriggered(event)
  }

  /// The subject's common name and the DNS and URI alternative names of `certificate`.
  static func names(_ certificate: NIOSSLCertificate) -> ClientCertificateNames {
    var names = ClientCertificateNames()
    names.commonName = certificate.subjectName.last { $0.type == .commonName }?.value
    for san in certificate._subjectAlternativeNames() {
      let text = san.contents.withUnsafeBufferPointer { String(decoding: $0, as: UTF8.self) }
      if san.nameType == .dnsName { names.dnsNames.append(text) }
      if san.nameType == .uri { names.uris.append(text) }
    }
    return names
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    if !done {
      logger.info(
        "TLS handshake failed",
        metadata: ["peer": "\(context.remoteAddress.map { "\($0)" } ?? "?")", "error": "\(error)"])
      context.close(promise: nil)
      return
    }
    context.fireErrorCaught(error)
  }
}

/// Sent from `TLSHandshakeGuard` to the connection once the handshake verified a client
/// certificate.
struct ClientCertificateEvent: Sendable {
  var names: ClientCertificateNames
}
