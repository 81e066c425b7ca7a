import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// A gRPC client for one `host:port` (h2c with prior knowledge): one HTTP/2 connection per
/// event loop that calls are made from, made on first use and made again after it drops.
///
/// A call made from a task running on one of the group's event loops (a server handler, which
/// prefers its connection's loop) goes out on that loop's connection: opening the stream,
/// writing and reading the response stay on the caller's thread, with no hand-off per call.
/// Calls from anywhere else share the connection of one loop chosen at init, with one hop to
/// it to open the stream. So a client holds at most one connection per loop of its group.
public final class GRPCClient: Sendable {
  public let host: String
  public let port: Int
  private let group: any EventLoopGroup
  /// The group's loops: a caller's loop gets its own connection only if it is one of these.
  private let loops: Set<ObjectIdentifier>
  /// The loop of the connection for callers not on one of `loops`.
  private let home: any EventLoop
  /// Replaced by ``replaceOptions(_:)`` (rotated credentials).
  private let currentOptions: Mutex<GRPCServerOptions>
  private var options: GRPCServerOptions { currentOptions.withLock { $0 } }
  private let logger: Logger
  private typealias Bound = NIOLoopBound<HTTP2ChannelHandler<ClientConnection>>
  /// The connection of one event loop: connecting (`ready` nil) or connected.
  private struct Slot {
    var future: EventLoopFuture<Bound>
    var ready: Bound?
  }
  /// By the loop's ObjectIdentifier.
  private let slots = Mutex<[ObjectIdentifier: Slot]>([:])

  public init(
    host: String, port: Int, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
    options: GRPCServerOptions = .init(), logger: Logger = Logger(label: "apus.grpc-client")
  ) {
    self.host = host
    self.port = port
    self.group = group
    var loops = Set<ObjectIdentifier>()
    for loop in group.makeIterator() { loops.insert(ObjectIdentifier(loop)) }
    self.loops = loops
    self.home = group.next()
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

  /// The loop whose connection a call from here uses: the caller's own, if it runs on one of
  /// the group's loops, else `home`.
  private func loopForCaller() -> any EventLoop {
    if let current = MultiThreadedEventLoopGroup.currentEventLoop, loops.contains(ObjectIdentifier(current)) {
      return current
    }
    return home
  }

  /// The connection on `loop`: at once when connected, else once connected.
  private func connection(on loop: any EventLoop) async throws -> Bound {
    let key = ObjectIdentifier(loop)
    let (ready, future, promise) = slots.withLock {
      slots -> (Bound?, EventLoopFuture<Bound>, EventLoopPromise<Bound>?) in
      if let slot = slots[key] { return (slot.ready, slot.future, nil) }
      let promise = loop.makePromise(of: Bound.self)
      slots[key] = Slot(future: promise.futureResult)
      return (nil, promise.futureResult, promise)
    }
    if let ready { return ready }
    // Outside the lock: a connect that fails at once completes on this thread if it is `loop`'s.
    if let promise { connect(on: loop, key: key, promise: promise) }
    return try await future.get()
  }

  /// Connects on `loop`, completing `promise`; the slot `key` is emptied when the connection
  /// fails or closes.
  private func connect(on loop: any EventLoop, key: ObjectIdentifier, promise: EventLoopPromise<Bound>) {
    let authority = "\(host):\(port)", options = self.options, logger = self.logger
    let future = promise.futureResult
    let bootstrap = ClientBootstrap(group: loop)
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
          self?.slots.withLock { if $0[key]?.future === future { $0[key] = nil } }
        }
        do {
          let handler = try channel.pipeline.syncOperations.handler(type: HTTP2ChannelHandler<ClientConnection>.self)
          let bound = NIOLoopBound(handler, eventLoop: channel.eventLoop)
          self?.slots.withLock { if $0[key]?.future === future { $0[key]?.ready = bound } }
          promise.succeed(bound)
        } catch {
          promise.fail(error)
        }
      case .failure(let error):
        self?.slots.withLock { if $0[key]?.future === future { $0[key] = nil } }
        promise.fail(RPCError(.unavailable, "cannot connect to \(authority): \(error)"))
      }
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
    let bound = try await connection(on: loopForCaller())
    // On the connection's loop already (the caller's own): open the stream here, no hop.
    if bound.eventLoop.inEventLoop {
      return try open(bound, path, metadata, timeout)
    }
    // One hop to the connection's loop, resumed from there.
    return try await withCheckedThrowingContinuation { continuation in
      bound.eventLoop.execute {
        continuation.resume(with: Result { try self.open(bound, path, metadata, timeout) })
      }
    }
  }

  /// Opens the call's stream; on the connection's event loop.
  private func open(
    _ bound: Bound, _ path: String, _ metadata: [(String, String)], _ timeout: Duration?
  ) throws -> ClientCall {
    guard let connection = bound.value.connection else {
      throw RPCError(.unavailable, "connection to \(host):\(port) is closed")
    }
    return try connection.openCall(path: path, metadata: options.callMetadata + metadata, timeout: timeout)
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

  /// Closes the connections; later calls connect again.
  public func close() async {
    let futures = slots.withLock { s in defer { s = [:] }; return s.values.map(\.future) }
    for future in futures {
      guard let bound = try? await future.get() else { continue }
      try? await bound.eventLoop.submit { bound.value.connection?.close() }.get()
    }
  }
}
