import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// Why a connection was closed at accept: the listener is at `maxConnections`.
struct ConnectionRefused: Error {}

/// A gRPC server on one listening socket: h2c with prior knowledge, nghttp2 underneath.
///
/// `start` binds; `shutdown` stops accepting, sends GOAWAY to every connection, waits for
/// running calls up to a grace period, then closes what is left.
public final class GRPCServer: Sendable {
  public let router: RPCRouter
  public let options: GRPCServerOptions
  private let group: any EventLoopGroup
  private let logger: Logger
  private let activity = ConnectionActivity()
  private let state = Mutex(State())

  private struct State {
    var listener: (any Channel)?
    var connections: [ObjectIdentifier: Tracked] = [:]
    var accepted: UInt64 = 0
    var lastCapWarning: ContinuousClock.Instant?
    var refusedSinceWarning = 0
  }

  private struct Tracked {
    var channel: any Channel
    var order: UInt64
    var handshaken = false
  }

  public init(
    router: RPCRouter, options: GRPCServerOptions = .init(), group: any EventLoopGroup,
    logger: Logger
  ) {
    self.router = router
    self.options = options
    self.group = group
    self.logger = logger
  }

  /// Binds `host:port` (port 0 picks a free one) and returns the bound address.
  public func start(host: String, port: Int) async throws -> SocketAddress {
    let router = self.router, options = self.options, logger = self.logger
    let activity = self.activity
    let bootstrap = ServerBootstrap(group: group)
      .serverChannelOption(.backlog, value: 1024)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
      .childChannelOption(.writeBufferWaterMark, value: .init(low: 256 * 1024, high: 1024 * 1024))
      .childChannelInitializer { [weak self] channel in
        guard let self, self.admit(channel) else {
          return channel.eventLoop.makeFailedFuture(ConnectionRefused())
        }
        let key = ObjectIdentifier(channel)
        let onHandshake: @Sendable () -> Void = { [weak self] in self?.handshaken(key) }
        return channel.eventLoop.makeCompletedFuture {
          if let tls = options.tls {
            try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls.context))
            try channel.pipeline.syncOperations.addHandler(TLSHandshakeGuard(logger: logger))
          }
          try channel.pipeline.syncOperations.addHandler(
            HTTP2ChannelHandler(logger: logger) { context in
              ServerConnection(
                context: context, router: router, options: options, logger: logger,
                activity: activity, onHandshake: onHandshake)
            })
        }
      }
    let listener = try await bootstrap.bind(host: host, port: port).get()
    state.withLock { $0.listener = listener }
    guard let address = listener.localAddress else {
      throw RPCError(.internal, "listener has no local address")
    }
    return address
  }

  /// Tracks a new connection, making room at `maxConnections` by dropping the oldest one
  /// that has not completed its handshake; false if there is none to drop.
  private func admit(_ channel: any Channel) -> Bool {
    let key = ObjectIdentifier(channel)
    let (admitted, victim, warn) = state.withLock { s -> (Bool, (any Channel)?, Int?) in
      var victim: (any Channel)?
      var warn: Int?
      if s.connections.count >= options.maxConnections {
        let oldest = s.connections.filter { !$0.value.handshaken }.min { $0.value.order < $1.value.order }
        if let oldest {
          victim = oldest.value.channel
          s.connections.removeValue(forKey: oldest.key)
        }
        s.refusedSinceWarning += 1
        let now = ContinuousClock.now
        if s.lastCapWarning.map({ now - $0 >= .seconds(10) }) ?? true {
          s.lastCapWarning = now
          warn = s.refusedSinceWarning
          s.refusedSinceWarning = 0
        }
        guard victim != nil else { return (false, nil, warn) }
      }
      s.accepted += 1
      s.connections[key] = Tracked(channel: channel, order: s.accepted)
      return (true, victim, warn)
    }
    if let warn {
      logger.warning(
        "connection limit reached: dropping connections that have not sent the HTTP/2 preface, refusing others",
        metadata: ["max_connections": "\(options.maxConnections)", "affected_connections": "\(warn)"])
    }
    victim?.close(promise: nil)
    guard admitted else { return false }
    ConnectionMetrics.connections.increment()
    channel.closeFuture.whenComplete { [weak self] _ in
      ConnectionMetrics.connections.decrement()
      self?.state.withLock { _ = $0.connections.removeValue(forKey: key) }
    }
    return true
  }

  private func handshaken(_ key: ObjectIdentifier) {
    state.withLock { $0.connections[key]?.handshaken = true }
  }

  /// Graceful stop: no new connections or calls; running calls get `grace` to finish.
  public func shutdown(grace: Duration) async {
    let (listener, connections) = state.withLock { s in
      let r = (s.listener, s.connections.values.map(\.channel))
      s.listener = nil
      return r
    }
    try? await listener?.close()
    for channel in connections {
      channel.pipeline.fireUserInboundEventTriggered(GracefulShutdownEvent())
    }
    let activity = self.activity
    await withTaskGroup(of: Void.self) { group in
      group.addTask { await activity.waitUntilIdle() }
      group.addTask { try? await Task.sleep(for: grace) }
      await group.next()
      group.cancelAll()
    }
    let remaining = state.withLock { $0.connections.values.map(\.channel) }
    for channel in remaining { try? await channel.close() }
  }
}
