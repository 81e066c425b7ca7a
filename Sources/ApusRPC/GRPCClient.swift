import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// A gRPC client for one `host:port` (h2c with prior knowledge) over one HTTP/2
/// connection, made on first use and made again after it drops.
public final class GRPCClient: Sendable {
  public let host: String
  public let port: Int
  private let group: any EventLoopGroup
  /// Replaced by ``replaceOptions(_:)`` (rotated credentials).
  private let currentOptions: Mutex<GRPCServerOptions>
  private var options: GRPCServerOptions { currentOptions.withLock { $0 } }
  private let logger: Logger
  private let state = Mutex<EventLoopFuture<NIOLoopBound<HTTP2ChannelHandler<ClientConnection>>>?>(nil)

  public init(
    host: String, port: Int, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
    options: GRPCServerOptions = .init(), logger: Logger = Logger(label: "apus.grpc-client")
  ) {
    self.host = host
    self.port = port
    self.group = group
    self.currentOptions = Mutex(options)
    self.logger = logger
  }

  /// Options for what comes next: connections made from now on use the new TLS settings and
  /// calls started from now on the new metadata; the open connection and its calls go on.
  public func replaceOptions(_ options: GRPCServerOptions) {
    currentOptions.withLock { $0 = options }
  }

  static func isIPAddress(_ host: String) -> Bool {
    (try? SocketAddress(ipAddress: host, port: 0)) != nil
  }

  /// Parses `grpc://host:port` or `grpcs://host:port` (the scheme is optional; `grpcs` needs
  /// `options.clientTLS`, else the system's trust store is used).
  public convenience init(
    url: String, options: GRPCServerOptions = .init(), logger: Logger = Logger(label: "apus.grpc-client")
  ) throws {
    var rest = Substring(url)
    var options = options
    if rest.hasPrefix("grpc://") {
      rest = rest.dropFirst(7)
    } else if rest.hasPrefix("grpcs://") {
      rest = rest.dropFirst(8)
      if options.clientTLS == nil {
        options.clientTLS = try ClientTLS(ca: nil, certificate: nil, privateKey: nil, serverName: nil)
      }
    }
    guard let colon = rest.lastIndex(of: ":"), let port = Int(rest[rest.index(after: colon)...]),
      !rest[..<colon].isEmpty
    else {
      throw RPCError(.invalidArgument, "expected grpc://host:port, got \"\(url)\"")
    }
    var host = String(rest[..<colon])
    if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
    self.init(host: host, port: port, options: options, logger: logger)
  }

  private func connection() -> EventLoopFuture<NIOLoopBound<HTTP2ChannelHandler<ClientConnection>>> {
    state.withLock { current in
      if let current { return current }
      let authority = "\(host):\(port)", options = self.options, logger = self.logger
      let promise = group.next().makePromise(of: NIOLoopBound<HTTP2ChannelHandler<ClientConnection>>.self)
      let future = promise.futureResult
      let bootstrap = ClientBootstrap(group: group)
        .channelOption(.socketOption(.tcp_nodelay), value: 1)
        .connectTimeout(TimeAmount(options.connectTimeout))
        .channelInitializer { [host] channel in
          channel.eventLoop.makeCompletedFuture {
            if let tls = options.clientTLS {
              // SNI carries names only: for an IP address the certificate is checked against it.
              let name = tls.serverName ?? (Self.isIPAddress(host) ? nil : host)
              try channel.pipeline.syncOperations.addHandler(
                try NIOSSLClientHandler(context: tls.context, serverHostname: name))
            }
            try channel.pipeline.syncOperations.addHandler(
              HTTP2ChannelHandler(logger: logger) { context in
                ClientConnection(context: context, authority: authority, options: options, logger: logger)
              })
          }
        }
      bootstrap.connect(host: host, port: port).whenComplete { [weak self] result in
        switch result {
        case .success(let channel):
          // Connected: the handler has started its session, so calls can open streams.
          channel.closeFuture.whenComplete { [weak self] _ in
            self?.state.withLock { if $0 === future { $0 = nil } }
          }
          do {
            let handler = try channel.pipeline.syncOperations.handler(type: HTTP2ChannelHandler<ClientConnection>.self)
            promise.succeed(NIOLoopBound(handler, eventLoop: channel.eventLoop))
          } catch {
            promise.fail(error)
          }
        case .failure(let error):
          self?.state.withLock { if $0 === future { $0 = nil } }
          promise.fail(RPCError(.unavailable, "cannot connect to \(authority): \(error)"))
        }
      }
      current = future
      return future
    }
  }

  /// Starts a call. Write requests, call `finishRequests()`, read `responses`. Without a
  /// `timeout`, a call made while serving another inherits what is left of its deadline.
  public func call(
    _ path: String, metadata: [(String, String)] = [], timeout: Duration? = nil
  ) async throws -> ClientCall {
    let timeout = timeout ?? CallDeadline.remaining
    if let timeout, timeout <= .zero {
      throw RPCError(.deadlineExceeded, "no time left to call \(path)")
    }
    let bound = try await connection().get()
    return try await bound.eventLoop.flatSubmit { () -> EventLoopFuture<ClientCall> in
      let loop = bound.eventLoop
      guard let connection = bound.value.connection else {
        return loop.makeFailedFuture(RPCError(.unavailable, "connection to \(self.host):\(self.port) is closed"))
      }
      let credentials = self.options.callMetadata
      return loop.makeCompletedFuture { try connection.openCall(path: path, metadata: credentials + metadata, timeout: timeout) }
    }.get()
  }

  /// One request, one response.
  public func unary(
    _ path: String, _ request: [UInt8], metadata: [(String, String)] = [], timeout: Duration? = nil
  ) async throws -> [UInt8] {
    let call = try await self.call(path, metadata: metadata, timeout: timeout)
    try await call.requests.write(request)
    call.finishRequests()
    return try await call.responses.single()
  }

  /// One request, a stream of responses.
  public func serverStreaming(
    _ path: String, _ request: [UInt8], metadata: [(String, String)] = [], timeout: Duration? = nil
  ) async throws -> RPCMessageStream {
    let call = try await self.call(path, metadata: metadata, timeout: timeout)
    try await call.requests.write(request)
    call.finishRequests()
    return call.responses
  }

  /// Closes the connection; later calls connect again.
  public func close() async {
    let future = state.withLock { s in defer { s = nil }; return s }
    guard let bound = try? await future?.get() else { return }
    try? await bound.eventLoop.submit { bound.value.connection?.close() }.get()
  }
}

