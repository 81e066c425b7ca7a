internal import CNGHTTP2
import Logging
import NIOCore

/// The client side of a connection: opens one stream per call.
final class ClientConnection: HTTP2Connection {
  let authority: String

  init(context: ChannelHandlerContext, authority: String, options: GRPCServerOptions, logger: Logger) {
    self.authority = authority
    super.init(context: context, options: options, logger: logger)
  }

  override var isServer: Bool { false }

  /// Submits the request HEADERS of a new call; its DATA follows from the outbound queue.
  func openCall(path: String, metadata: [(String, String)], timeout: Duration?) throws -> ClientCall {
    guard let session, !closed else { throw RPCError(.unavailable, "connection to \(authority) is closed") }
    var headers = [
      (":method", "POST"), (":scheme", options.clientTLS == nil ? "http" : "https"), (":path", path), (":authority", authority),
      ("content-type", "application/grpc"), ("te", "trailers"),
    ]
    if let timeout {
      let micros = max(1, timeout.components.seconds * 1_000_000 + timeout.components.attoseconds / 1_000_000_000_000)
      headers.append(("grpc-timeout", micros < 100_000_000 ? "\(micros)u" : "\(micros / 1_000_000)S"))
    }
    headers += metadata
    var provider = Self.dataProvider
    let id = withHeaderList(headers) { nv, count in
      nghttp2_submit_request(session, nil, nv, count, &provider, nil)
    }
    guard id > 0 else {
      throw RPCError(.unavailable, "cannot open a stream to \(authority): \(String(cString: nghttp2_strerror(id)))")
    }
    let stream = CallStream(id: id, maxMessageBytes: options.maxReceiveMessageBytes)
    stream.started = true
    streams[id] = stream
    let (inbound, outbound) = makeQueues(stream, encoding: .identity)
    if let timeout {
      let bound = NIOLoopBound(self, eventLoop: eventLoop)
      stream.deadlineTimer = eventLoop.scheduleTask(in: TimeAmount(timeout)) {
        bound.value.cancel(id, RPCError(.deadlineExceeded, "deadline exceeded calling \(path)"))
      }
    }
    let bound = NIOLoopBound(self, eventLoop: eventLoop)
    let loop = eventLoop
    flush()
    return ClientCall(
      requests: RPCMessageWriter(queue: outbound), responses: RPCMessageStream(queue: inbound),
      outbound: outbound,
      cancel: { loop.execute { bound.value.cancel(id, RPCError(.cancelled, "the call was cancelled")) } })
  }

  /// Resets the stream and fails the call locally.
  func cancel(_ id: Int32, _ error: RPCError) {
    guard let stream = streams[id] else { return }
    stream.rejected = true
    stream.inbound?.finish(error)
    stream.outbound?.close(error)
    reset(stream, code: UInt32(NGHTTP2_CANCEL.rawValue))
  }

  override func headersComplete(_ stream: CallStream, request: Bool, endStream: Bool) {
    guard endStream else { return }  // response headers; messages follow
    finishWithTrailers(stream)
  }

  override func peerEnded(_ stream: CallStream) {
    finishWithTrailers(stream)
  }

  /// A stream closed after the server's trailers (e.g. RST_STREAM NO_ERROR when the server
  /// answered before reading the whole request) keeps its status: requests still being
  /// written are dropped rather than failing the call.
  override func abandon(_ stream: CallStream, _ error: RPCError) {
    if stream.peerEnded { stream.outbound?.discardFurtherWrites() }
    super.abandon(stream, error)
  }

  /// Ends the call with the status in the trailers (or in a trailers-only response).
  private func finishWithTrailers(_ stream: CallStream) {
    stream.deadlineTimer?.cancel()
    var httpStatus = "", code: Int32?, message = "", details: [UInt8]?
    for (name, value) in stream.headers {
      switch name {
      case ":status": httpStatus = value
      case "grpc-status": code = Int32(value)
      case "grpc-message": message = PercentEncoding.decode(value)
      case "grpc-status-details-bin": details = Base64.decode(value)
      default: break
      }
    }
    guard httpStatus == "200" else {
      return finishInbound(stream, error: RPCError(Self.code(forHTTPStatus: httpStatus), "HTTP status \(httpStatus) from \(authority)"))
    }
    guard let code else {
      return finishInbound(stream, error: RPCError(.internal, "\(authority) ended the call without grpc-status"))
    }
    finishInbound(stream, error: code == 0 ? nil : RPCError(RPCStatusCode(rawValue: code), message, statusDetails: details))
  }

  /// gRPC's mapping of HTTP statuses for responses that are not gRPC.
  static func code(forHTTPStatus status: String) -> RPCStatusCode {
    switch status {
    case "400": .internal
    case "401": .unauthenticated
    case "403": .permissionDenied
    case "404": .unimplemented
    case "429", "502", "503", "504": .unavailable
    default: .unknown
    }
  }
}

/// One call from the client side: write requests, then read responses; the responses
/// sequence throws the call's status if it is not OK.
public struct ClientCall: Sendable {
  public let requests: RPCMessageWriter
  public let responses: RPCMessageStream
  let outbound: OutboundQueue
  let cancel: @Sendable () -> Void

  /// Half-closes the request side.
  public func finishRequests() {
    outbound.finish(CallStatus(error: nil))
  }

  /// Resets the stream; reads and writes fail with CANCELLED.
  public func cancelCall() { cancel() }
}
