internal import CNGHTTP2
import Logging
import NIOCore

/// The server side of a connection: each request stream becomes a handler task.
final class ServerConnection: HTTP2Connection {
  let router: RPCRouter
  let activity: ConnectionActivity
  private var shuttingDown = false
  /// Since when no call has been open (nil while one is).
  private var idleSince: NIODeadline? = .now()
  private let onHandshake: @Sendable () -> Void

  init(
    context: ChannelHandlerContext, router: RPCRouter, options: GRPCServerOptions,
    logger: Logger, activity: ConnectionActivity, onHandshake: @escaping @Sendable () -> Void
  ) {
    self.router = router
    self.activity = activity
    self.onHandshake = onHandshake
    super.init(context: context, options: options, logger: logger)
  }

  override func handshakeCompleted() { onHandshake() }

  /// Cancels stalled uploads; closes the connection after `idleTimeout` without calls.
  override func timersChecked(now: NIODeadline) {
    if let limit = options.uploadIdleTimeout {
      let stalled = streams.values.filter {
        !$0.peerEnded && now - $0.lastDataAt >= TimeAmount(limit)
      }
      if !stalled.isEmpty {
        logProblem(
          .info, "cancelling calls whose request sent nothing",
          [
            "peer": "\(peer)", "calls": "\(stalled.count)",
            "seconds": "\(limit.components.seconds)",
          ])
      }
      for stream in stalled {
        stream.peerEnded = true
        reset(stream, code: UInt32(NGHTTP2_CANCEL.rawValue), reason: .uploadStalled)
      }
    }
    if let limit = options.idleTimeout, let since = idleSince, now - since >= TimeAmount(limit) {
      beginGracefulShutdown(.idle)
    }
  }

  /// Stops taking new calls: GOAWAY now, close once the running calls finish.
  override func beginGracefulShutdown(_ reason: GoawayReason = .shutdown) {
    guard !shuttingDown, !closed else { return }
    guard session != nil else { return close() }  // it never spoke: nothing to drain
    shuttingDown = true
    submitGoaway(
      reason, code: UInt32(NGHTTP2_NO_ERROR.rawValue),
      detail: reason == .idle ? "idle timeout" : "server shutting down")
    flush()
    if streams.isEmpty { close() }
  }

  override func beginHeaders(_ id: Int32, request: Bool) {
    guard request else { return }
    streams[id] = CallStream(id: id, maxMessageBytes: options.maxReceiveMessageBytes)
    idleSince = nil
    activity.streamOpened()
  }

  override func headersComplete(_ stream: CallStream, request: Bool, endStream: Bool) {
    if request { startCall(stream) }
    if endStream { finishInbound(stream) }
  }

  override func peerEnded(_ stream: CallStream) {
    finishInbound(stream)
  }

  override func abandon(_ stream: CallStream, _ error: RPCError) {
    super.abandon(stream, error)
    activity.streamClosed()
    if streams.isEmpty { idleSince = .now() }
    if shuttingDown && !closed && streams.isEmpty {
      let bound = NIOLoopBound(self, eventLoop: eventLoop)
      eventLoop.execute { bound.value.flush(); bound.value.close() }
    }
  }

  // MARK: - Calls

  private func startCall(_ stream: CallStream) {
    var method = "", path = "", contentType = "", encoding = "identity", timeout: String?
    var acceptEncoding: String?
    var metadata: [(name: String, value: String)] = []
    for (name, value) in stream.headers {
      switch name {
      case ":method": method = value
      case ":path": path = value
      case "content-type": contentType = value
      case "grpc-encoding": encoding = value
      case "grpc-timeout": timeout = value
      case "grpc-accept-encoding": acceptEncoding = value
      case "te", "user-agent": break
      default: if !name.hasPrefix(":") { metadata.append((name, value)) }
      }
    }
    stream.headers = []
    guard method == "POST" else {
      return reject(stream, httpStatus: "405")
    }
    guard contentType.hasPrefix("application/grpc") else {
      return reject(stream, httpStatus: "415")
    }
    guard let requestEncoding = MessageEncoding(rawValue: encoding) else {
      return reject(
        stream,
        RPCError(
          .unimplemented,
          "grpc-encoding \"\(encoding)\" is not supported (\(MessageEncoding.acceptHeader))"))
    }
    guard let route = router.route(for: path) else {
      return reject(stream, RPCError(.unimplemented, "unknown method \(path)"))
    }
    let handler = route.handler
    var deadline: ContinuousClock.Instant?
    var duration = route.longLived ? nil : options.defaultDeadline
    if let timeout {
      guard let parsed = GRPCTimeout.parse(timeout) else {
        return reject(stream, RPCError(.internal, "malformed grpc-timeout \"\(timeout)\""))
      }
      duration = parsed
    }
    if let duration {
      deadline = ContinuousClock.now.advanced(by: duration)
      let bound = NIOLoopBound(self, eventLoop: eventLoop), id = stream.id
      stream.deadlineTimer = eventLoop.scheduleTask(in: TimeAmount(duration)) {
        bound.value.deadlineExpired(id)
      }
    }

    let (inbound, outbound) = makeQueues(stream, encoding: requestEncoding)
    let compressor = options.responseCompression?.compressor(acceptEncoding: acceptEncoding)
    stream.responseEncoding = compressor?.encoding
    let context = ServerContext(
      path: path, metadata: Metadata(metadata), deadline: deadline, peer: peer,
      clientCertificate: clientCertificate)
    let logger = self.logger, metrics = route.metrics, started = ContinuousClock.now
    let slowAfter = route.longLived ? nil : options.slowCallThreshold
    let logFields = options.callLogFields
    metrics.started()
    // Owned by the stream: cancelled when the stream is reset or closed, its deadline passes
    // or the connection drops; GRPCServer.shutdown waits for every stream (ConnectionActivity).
    stream.task = Task {
      var status = CallStatus(error: nil)
      do {
        try await CallDeadline.$current.withValue(deadline) {
          try await handler(RPCMessageStream(queue: inbound), RPCMessageWriter(queue: outbound, compressor: compressor), context)
        }
      } catch {
        let rpcError = RPCError(from: error)
        if rpcError.code == .unknown || rpcError.code == .internal {
          logger.warning("call failed", metadata: ["path": "\(path)", "error": "\(rpcError)"])
        }
        status = CallStatus(error: rpcError)
      }
      // Request messages the handler did not read are dropped and their window granted, so
      // a client still sending a body it no longer needs (an existing blob) is not stuck.
      inbound.discard()
      // Counted and logged before the status goes out, so a client that saw its answer
      // finds the call in /metrics and the log.
      let elapsed = ContinuousClock.now - started
      let (ended, sent) = outbound.outcome
      let code = ended ?? status.error?.code ?? .ok
      let received = inbound.receivedBytes
      metrics.finished(code: code, duration: elapsed, receivedBytes: received, sentBytes: sent)
      defer { outbound.finish(status) }
      let slow = slowAfter.map { elapsed >= $0 } ?? false
      guard slow || logger.logLevel <= .debug else { return }
      var fields: Logger.Metadata = [
        "method": "\(metrics.method)", "code": "\(code)",
        "duration_ms": "\(((Double(elapsed.components.seconds) * 1e6 + Double(elapsed.components.attoseconds) / 1e12).rounded()) / 1000)",
        "received_bytes": "\(received)", "sent_bytes": "\(sent)", "peer": "\(context.peer)",
      ]
      if let logFields { fields.merge(logFields(context.metadata)) { current, _ in current } }
      if slow {
        logger.warning("slow call", metadata: fields)
      } else {
        logger.debug("call finished", metadata: fields)
      }
    }
  }

  private func deadlineExpired(_ id: Int32) {
    guard let stream = streams[id], let outbound = stream.outbound else { return }
    if outbound.finish(CallStatus(error: RPCError(.deadlineExceeded, "deadline exceeded"))) {
      stream.task?.cancel()
      stream.inbound?.finish(RPCError(.deadlineExceeded, "deadline exceeded"))
    }
  }

  private func reject(_ stream: CallStream, httpStatus: String) {
    stream.rejected = true
    stream.started = true
    withHeaderList([(":status", httpStatus)]) { nv, count in
      _ = nghttp2_submit_response(session, stream.id, nv, count, nil)
    }
  }

  private func reject(_ stream: CallStream, _ error: RPCError) {
    stream.rejected = true
    stream.started = true
    submitTrailersOnly(stream.id, error)
  }

  private static let responseHeaders = [
    (":status", "200"), ("content-type", "application/grpc"),
    ("grpc-accept-encoding", MessageEncoding.acceptHeader),
  ]

  private static func trailers(_ error: RPCError?) -> [(String, String)] {
    guard let error else { return [("grpc-status", "0")] }
    var t = [("grpc-status", "\(error.code.rawValue)")]
    if !error.message.isEmpty {
      t.append(("grpc-message", PercentEncoding.encode(error.message)))
    }
    if let details = error.statusDetails {
      t.append(("grpc-status-details-bin", Base64.encode(details)))
    }
    return t
  }

  private func submitTrailersOnly(_ id: Int32, _ error: RPCError?) {
    withHeaderList(Self.responseHeaders + Self.trailers(error)) { nv, count in
      _ = nghttp2_submit_response(session, id, nv, count, nil)
    }
  }

  override func startOutbound(_ stream: CallStream) {
    guard let outbound = stream.outbound else { return }
    stream.started = true
    if let status = outbound.trailersOnlyStatus {
      submitTrailersOnly(stream.id, status.error)
    } else {
      var provider = Self.dataProvider
      var headers = Self.responseHeaders
      if let encoding = stream.responseEncoding { headers.append(("grpc-encoding", encoding.rawValue)) }
      withHeaderList(headers) { nv, count in
        _ = nghttp2_submit_response(session, stream.id, nv, count, &provider)
      }
    }
  }

  override func outboundFinished(_ stream: CallStream, _ status: CallStatus) -> UInt32 {
    stream.deadlineTimer?.cancel()
    withHeaderList(Self.trailers(status.error)) { nv, count in
      _ = nghttp2_submit_trailer(session, stream.id, nv, count)
    }
    return UInt32(NGHTTP2_DATA_FLAG_NO_END_STREAM.rawValue)
  }
}
