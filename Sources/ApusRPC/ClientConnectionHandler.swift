import Logging
import NIOCore

/// The NIO side of a client connection.
final class ClientConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
  typealias InboundIn = ByteBuffer
  typealias OutboundOut = ByteBuffer

  private let authority: String
  private let options: GRPCServerOptions
  private let logger: Logger
  private(set) var connection: ClientConnection?

  init(authority: String, options: GRPCServerOptions, logger: Logger) {
    self.authority = authority
    self.options = options
    self.logger = logger
  }

  func handlerAdded(context: ChannelHandlerContext) {
    connection = ClientConnection(context: context, authority: authority, options: options, logger: logger)
    if context.channel.isActive { connection?.start() }
  }

  func channelActive(context: ChannelHandlerContext) {
    connection?.start()
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
    context.fireChannelInactive()
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    logger.debug("client connection error", metadata: ["error": "\(error)"])
    context.close(promise: nil)
  }
}
