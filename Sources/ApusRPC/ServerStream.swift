import NIOCore

/// Event-loop state of one HTTP/2 stream carrying a gRPC call.
final class ServerStream {
  let id: Int32
  var headers: [(String, String)] = []
  var deframer: GRPCMessageDeframer
  var inbound: InboundMessageQueue?
  var outbound: OutboundQueue?
  var task: Task<Void, Never>?
  var deadlineTimer: Scheduled<Void>?
  /// DATA bytes received but not yet reported to nghttp2 as consumed.
  var unconsumed = 0
  var responseStarted = false
  /// Request rejected before a handler ran; further DATA is ignored.
  var rejected = false

  init(id: Int32, maxMessageBytes: Int) {
    self.id = id
    self.deframer = GRPCMessageDeframer(maxMessageBytes: maxMessageBytes)
  }
}
