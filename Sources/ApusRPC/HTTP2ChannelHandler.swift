import Logging
import NIOCore

/// The NIO side of a connection, either role: feeds socket bytes to its ``HTTP2Connection``
/// and lets it write when the socket can take more.
final class HTTP2ChannelHandler<Connection: HTTP2Connection>: ChannelDuplexHandler,
  RemovableChannelHandler
{
  typealias InboundIn = ByteBuffer
  typealias OutboundIn = ByteBuffer
  typealias OutboundOut = ByteBuffer

  private let makeConnection: (ChannelHandlerContext) -> Connection
  private let logger: Logger
  private(set) var connection: Connection?

  init(logger: Logger, makeConnection: @escaping (ChannelHandlerContext) -> Connection) {
    self.logger = logger
    self.makeConnection = makeConnection
  }

  func handlerAdded(context: ChannelHandlerContext) {
    connection = makeConnection(context)
    if context.channel.isActive { connection?.start() }
  }

  func channelActive(context: ChannelHandlerContext) {
    connection?.start()
    context.fireChannelActive()
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    connection?.receive(unwrapInboundIn(data))
  }

  /// Reads are held back while the connection holds too many request bytes; it issues the
  /// read itself once they are released.
  func read(context: ChannelHandlerContext) {
    if let connection, !connection.shouldRead() { return }
    context.read()
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
    logger.debug(
      "connection error",
      metadata: ["peer": "\(connection?.peer ?? "unknown")", "error": "\(error)"])
    context.close(promise: nil)
  }

  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    if event is GracefulShutdownEvent { connection?.beginGracefulShutdown() }
    if let identity = event as? ClientCertificateEvent { connection?.clientCertificate = identity.names }
    context.fireUserInboundEventTriggered(event)
  }
}

/// Sent down each connection's pipeline to start a graceful shutdown.
struct GracefulShutdownEvent: Sendable {}
