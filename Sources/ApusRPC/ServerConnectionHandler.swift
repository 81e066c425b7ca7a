import Logging
import NIOCore

/// The NIO side of a connection: feeds socket bytes to ``ServerConnection`` and lets it
/// write when the socket can take more.
final class ServerConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
  typealias InboundIn = ByteBuffer
  typealias OutboundOut = ByteBuffer

  private let router: RPCRouter
  private let options: GRPCServerOptions
  private let logger: Logger
  private let activity: ConnectionActivity
  private(set) var connection: ServerConnection?

  init(router: RPCRouter, options: GRPCServerOptions, logger: Logger, activity: ConnectionActivity) {
    self.router = router
    self.options = options
    self.logger = logger
    self.activity = activity
  }

  func handlerAdded(context: ChannelHandlerContext) {
    let connection = ServerConnection(
      context: context, router: router, options: options, logger: logger, activity: activity)
    self.connection = connection
    if context.channel.isActive { _ = connection.start() }
  }

  func channelActive(context: ChannelHandlerContext) {
    if let connection, !connection.started { _ = connection.start() }
    context.fireChannelActive()
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    connection?.receive(unwrapInboundIn(data))
  }

  func channelWritabilityChanged(context: ChannelHandlerContext) {
    if context.channel.isWritable { connection?.flush() }
    context.fireChannelWritabilityChanged()
  }

  func channelInactive(context: ChannelHandlerContext) {
    connection?.close()
    connection = nil
    context.fireChannelInactive()
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    logger.debug("connection error", metadata: ["error": "\(error)"])
    context.close(promise: nil)
  }

  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    if event is GracefulShutdownEvent { connection?.beginGracefulShutdown() }
    context.fireUserInboundEventTriggered(event)
  }
}

/// Sent down each connection's pipeline to start a graceful shutdown.
struct GracefulShutdownEvent: Sendable {}
