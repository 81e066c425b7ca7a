import NIOCore

/// Event-loop state of one HTTP/2 stream carrying a gRPC call, on either side.
final class CallStream {
  let id: Int32
  /// Client: response headers and trailers, as received.
  var headers: [(String, String)] = []
  /// Server: what the request headers said.
  var request = RequestHeaders()
  var deframer: GRPCMessageDeframer
  /// Messages from the peer: requests on a server, responses on a client.
  var inbound: InboundMessageQueue?
  /// Messages to the peer.
  var outbound: OutboundQueue?
  var task: Task<Void, Never>?
  var deadlineTimer: Scheduled<Void>?
  /// DATA bytes received but not yet reported to nghttp2 as consumed.
  var unconsumed = 0
  /// Server: the `grpc-encoding` of the responses, when the call compresses them.
  var responseEncoding: MessageEncoding?
  /// Server: response HEADERS submitted. Client: request submitted.
  var started = false
  /// Further DATA is ignored (request rejected, or the stream failed).
  var rejected = false
  /// The peer sent END_STREAM (or the request body is no longer wanted).
  var peerEnded = false
  /// Bytes of an incomplete message held by `deframer`, as counted in the connection's account.
  var deframedHeld = 0
  /// When DATA last arrived (or the stream opened): stalled uploads are cancelled.
  var lastDataAt: NIODeadline
  /// Server: a call whose route may answer on the event loop, waiting for the end of its
  /// request within the read that opened it (then answered, or given a handler task).
  var pending: PendingCall?
  /// Server: the request message of a pending call, held here rather than in a queue while
  /// the call may still be answered on the event loop.
  var heldRequest: GRPCMessageDeframer.Message?
  /// Server: the response of a call answered on the event loop, and how much of it went
  /// into DATA frames.
  var immediateResponse: [UInt8] = []
  var immediateSent = 0

  init(id: Int32, maxMessageBytes: Int, openedAt: NIODeadline = .now()) {
    self.id = id
    self.lastDataAt = openedAt
    self.deframer = GRPCMessageDeframer(maxMessageBytes: maxMessageBytes)
  }
}
