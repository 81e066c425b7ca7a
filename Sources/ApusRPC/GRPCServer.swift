import Logging
import NIOCore
import NIOPosix
import Synchronization

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
  private let state = Mutex<(listener: (any Channel)?, connections: [ObjectIdentifier: any Channel])>(
    (nil, [:]))

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
        self?.track(channel)
        return channel.eventLoop.makeCompletedFuture {
          try channel.pipeline.syncOperations.addHandler(
            HTTP2ChannelHandler(logger: logger) { context in
              ServerConnection(
                context: context, router: router, options: options, logger: logger,
                activity: activity)
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

  private func track(_ channel: any Channel) {
    let key = ObjectIdentifier(channel)
    state.withLock { $0.connections[key] = channel }
    channel.closeFuture.whenComplete { [weak self] _ in
      self?.state.withLock { _ = $0.connections.removeValue(forKey: key) }
    }
  }

  /// Graceful stop: no new connections or calls; running calls get `grace` to finish.
  public func shutdown(grace: Duration) async {
    let (listener, connections) = state.withLock { s in
      let r = (s.listener, Array(s.connections.values))
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
    let remaining = state.withLock { Array($0.connections.values) }
    for channel in remaining { try? await channel.close() }
  }
}
