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
  /// Where this connection's call handlers run: its own event loop.
  private let handlerExecutor: EventLoopTaskExecutor
  /// Streams whose call may be answered at once, waiting for the end of the current read.
  private var pendingCalls: [Int32] = []

  init(
    context: ChannelHandlerContext, router: RPCRouter, options: GRPCServerOptions,
    logger: Logger, activity: ConnectionActivity, onHandshake: @escaping @Sendable () -> Void
  ) {
    self.router = router
    self.activity = activity
    self.onHandshake = onHandshake
    self.handlerExecutor = EventLoopTaskExecutor(context.eventLoop)
    super.init(context: context, options: options, logger: logger)
  }

  override func handshakeCompleted() { onHandshake() }

  /// Cancels stalled uploads; closes the connection after `idleTimeout` without calls.
  override func timersChecked(now: NIODeadline) {
    if let limit = options.uploadIdleTimeout {
      let stalled = streams.all.filter {
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
    streams[id] = CallStream(
      id: id, maxMessageBytes: options.maxReceiveMessageBytes, openedAt: lastReceivedAt)
    idleSince = nil
    activity.streamOpened()
  }

  override func headersComplete(_ stream: CallStream, request: Bool, endStream: Bool) {
    if request { startCall(stream) }
    if endStream { peerEnded(stream) }
  }

  override func peerEnded(_ stream: CallStream) {
    finishInbound(stream)
    if stream.pending != nil { answerNow(stream) }
  }

  /// A pending call whose request began but did not end in this read gets its task: the
  /// body is streaming and someone must read it. One that only has its headers so far
  /// (clients often send HEADERS and DATA in separate writes) stays pending: there is
  /// nothing to read yet, and its deadline runs.
  override func receiveProcessed() {
    guard !pendingCalls.isEmpty else { return }
    var waiting: [Int32] = []
    for id in pendingCalls {
      guard let stream = streams[id], stream.pending != nil else { continue }
      if stream.unconsumed == 0 {
        armDeadline(stream, timeout: stream.pending?.timeout)
        waiting.append(id)
      } else if let call = stream.pending.take() {
        runHandler(stream, call)
      }
    }
    pendingCalls = waiting
  }

  override func abandon(_ stream: CallStream, _ error: RPCError) {
    stream.pending = nil
    super.abandon(stream, error)
    activity.streamClosed()
    if streams.isEmpty { idleSince = .now() }
    if shuttingDown && !closed && streams.isEmpty {
      let bound = NIOLoopBound(self, eventLoop: eventLoop)
      eventLoop.execute {
        bound.value.flush()
        bound.value.close()
      }
    }
  }

  // MARK: - Calls

  /// Server: headers are parsed as they arrive, without a String per header.
  override func header(
    _ stream: CallStream, name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer
  ) {
    stream.request.add(name: name, value: value, router: router)
  }

  private func startCall(_ stream: CallStream) {
    // Moved out, not copied: a copy would retain each of its references once more.
    var request = RequestHeaders()
    swap(&request, &stream.request)
    guard request.isPost else {
      return reject(stream, httpStatus: "405")
    }
    guard request.isGRPC else {
      return reject(stream, httpStatus: "415")
    }
    let encoding = request.encoding ?? "identity"
    guard let requestEncoding = MessageEncoding(rawValue: encoding) else {
      return reject(
        stream,
        RPCError(
          .unimplemented,
          "grpc-encoding \"\(encoding)\" is not supported (\(MessageEncoding.acceptHeader))"))
    }
    guard let route = request.route else {
      return reject(stream, RPCError(.unimplemented, "unknown method \(request.unknownPath)"))
    }
    let timeoutHeader = request.timeout
    let acceptEncoding = request.acceptEncoding
    let path = route.path
    let metadata = request.metadata
    var timeout = route.longLived ? nil : options.defaultDeadline
    if let timeoutHeader {
      guard let parsed = GRPCTimeout.parse(timeoutHeader) else {
        return reject(stream, RPCError(.internal, "malformed grpc-timeout \"\(timeoutHeader)\""))
      }
      timeout = parsed
    }
    // The read that brought the headers: every call of a read starts then, without a
    // clock read of its own.
    let now = lastReceivedAt
    let context = ServerContext(
      path: path, metadata: Metadata(metadata), deadline: timeout.map { now + TimeAmount($0) },
      peer: peer, clientCertificate: clientCertificate)
    let call = PendingCall(
      route: route, context: context, timeout: timeout, requestEncoding: requestEncoding,
      compressor: options.responseCompression?.compressor(acceptEncoding: acceptEncoding),
      started: now)
    // A call its route may answer at once waits for the rest of this read: its request
    // usually came in the same packet (HEADERS, DATA with END_STREAM). Compressed responses
    // are left to the task: compressing on the event loop would hold it.
    if route.immediate != nil && call.compressor == nil {
      stream.pending = call
      pendingCalls.append(stream.id)
    } else {
      runHandler(stream, call)
    }
  }

  /// Answers a pending call on the event loop if its request is complete and the route can
  /// answer without waiting; otherwise gives it a handler task.
  private func answerNow(_ stream: CallStream) {
    // Moved out of the stream, not copied (a copy retains each of its references).
    guard let call = stream.pending.take() else { return }
    // Only a request that ended cleanly after exactly one uncompressed message, still held
    // by the stream: anything else is the handler's to read (and report).
    guard let immediate = call.route.immediate, stream.inbound == nil, !stream.rejected,
      stream.deframer.isAtMessageBoundary, let held = stream.heldRequest, !held.compressed
    else { return runHandler(stream, call) }
    let request = held.payload
    var failure: RPCError?
    do {
      guard let response = try immediate(request, call.context) else {
        return runHandler(stream, call)
      }
      stream.immediateResponse = response
    } catch {
      failure = call.failed(error, logger: logger)
    }
    releaseHeldRequest(stream)
    stream.deadlineTimer?.cancel()
    stream.deadlineTimer = nil
    call.route.metrics.started()
    call.finished(
      code: failure?.code ?? .ok, receivedBytes: request.count,
      sentBytes: failure == nil ? 5 + stream.immediateResponse.count : 0, logger: logger,
      options: options)
    stream.started = true
    if let failure { return submitTrailersOnly(stream.id, failure) }
    var provider = nghttp2_data_provider(
      source: nghttp2_data_source(ptr: nil), read_callback: readImmediateResponse)
    Self.okResponseHeaders.withList { nv, count in
      _ = nghttp2_submit_response(session, stream.id, nv, count, &provider)
    }
  }

  /// nghttp2 asks for the DATA of a call answered on the event loop: the gRPC message
  /// prefix, then the response; at its end, the OK trailers.
  fileprivate func readImmediate(
    _ id: Int32, _ buffer: UnsafeMutableRawBufferPointer, _ flags: UnsafeMutablePointer<UInt32>
  ) -> Int {
    guard let stream = streams[id] else {
      return Int(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue)
    }
    let body = stream.immediateResponse
    var n = 0
    while n < buffer.count && stream.immediateSent < 5 {
      let i = stream.immediateSent
      buffer[n] = i == 0 ? 0 : UInt8(truncatingIfNeeded: body.count >> (8 * (4 - i)))
      n += 1
      stream.immediateSent += 1
    }
    let offset = stream.immediateSent - 5
    let take = min(buffer.count - n, body.count - offset)
    if take > 0 {
      body.withUnsafeBytes { src in
        UnsafeMutableRawBufferPointer(rebasing: buffer[n..<(n + take)])
          .copyMemory(from: UnsafeRawBufferPointer(rebasing: src[offset..<(offset + take)]))
      }
      n += take
      stream.immediateSent += take
    }
    if stream.immediateSent == 5 + body.count {
      stream.immediateResponse = []
      flags.pointee |= UInt32(
        NGHTTP2_DATA_FLAG_EOF.rawValue | NGHTTP2_DATA_FLAG_NO_END_STREAM.rawValue)
      Self.okTrailers.withList { nv, count in
        _ = nghttp2_submit_trailer(session, id, nv, count)
      }
    }
    return n
  }

  /// Schedules the call's deadline, once.
  private func armDeadline(_ stream: CallStream, timeout: Duration?) {
    guard stream.deadlineTimer == nil, let timeout else { return }
    let bound = NIOLoopBound(self, eventLoop: eventLoop)
    let id = stream.id
    stream.deadlineTimer = eventLoop.scheduleTask(in: TimeAmount(timeout)) {
      bound.value.deadlineExpired(id)
    }
  }

  /// Gives a call its handler task, on this connection's event loop.
  private func runHandler(_ stream: CallStream, _ call: PendingCall) {
    armDeadline(stream, timeout: call.timeout)
    let inbound = requestQueue(stream, encoding: call.requestEncoding)
    let outbound = makeOutbound(stream)
    stream.responseEncoding = call.compressor?.encoding
    let handler = call.route.handler
    let context = call.context
    let compressor = call.compressor
    let logger = self.logger
    let options = self.options
    call.route.metrics.started()
    // Owned by the stream: cancelled when the stream is reset or closed, its deadline passes
    // or the connection drops; GRPCServer.shutdown waits for every stream (ConnectionActivity).
    stream.task = Task(executorPreference: handlerExecutor) {
      var status = CallStatus(error: nil)
      do {
        try await CallDeadline.$current.withValue(context.deadline) {
          try await handler(
            RPCMessageStream(queue: inbound),
            RPCMessageWriter(queue: outbound, compressor: compressor), context)
        }
      } catch {
        status = CallStatus(error: call.failed(error, logger: logger))
      }
      // Request messages the handler did not read are dropped and their window granted, so
      // a client still sending a body it no longer needs (an existing blob) is not stuck.
      inbound.discard()
      let (ended, sent) = outbound.outcome
      call.finished(
        code: ended ?? status.error?.code ?? .ok, receivedBytes: inbound.receivedBytes,
        sentBytes: sent, logger: logger, options: options)
      outbound.finish(status)
    }
  }

  private func deadlineExpired(_ id: Int32) {
    guard let stream = streams[id] else { return }
    if let call = stream.pending.take() {
      // Its request never completed: the status a handler task would have ended with.
      let error = RPCError(.deadlineExceeded, "deadline exceeded")
      stream.inbound?.finish(error)
      call.route.metrics.started()
      call.finished(
        code: .deadlineExceeded,
        receivedBytes: stream.inbound?.receivedBytes ?? stream.heldRequest?.payload.count ?? 0,
        sentBytes: 0,
        logger: logger, options: options)
      stream.started = true
      submitTrailersOnly(stream.id, error)
      return flush()
    }
    guard let outbound = stream.outbound else { return }
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

  /// The response headers and trailers of every uncompressed OK call, encoded once.
  private static let okResponseHeaders = StaticHeaderList(responseHeaders)
  private static let okTrailers = StaticHeaderList(trailers(nil))

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
    } else if let encoding = stream.responseEncoding {
      var provider = Self.dataProvider
      withHeaderList(Self.responseHeaders + [("grpc-encoding", encoding.rawValue)]) { nv, count in
        _ = nghttp2_submit_response(session, stream.id, nv, count, &provider)
      }
    } else {
      var provider = Self.dataProvider
      Self.okResponseHeaders.withList { nv, count in
        _ = nghttp2_submit_response(session, stream.id, nv, count, &provider)
      }
    }
  }

  override func outboundFinished(_ stream: CallStream, _ status: CallStatus) -> UInt32 {
    stream.deadlineTimer?.cancel()
    if status.error == nil {
      Self.okTrailers.withList { nv, count in
        _ = nghttp2_submit_trailer(session, stream.id, nv, count)
      }
    } else {
      withHeaderList(Self.trailers(status.error)) { nv, count in
        _ = nghttp2_submit_trailer(session, stream.id, nv, count)
      }
    }
    return UInt32(NGHTTP2_DATA_FLAG_NO_END_STREAM.rawValue)
  }
}

/// nghttp2's data source for a call answered on the event loop (``ServerConnection/readImmediate``).
private let readImmediateResponse: nghttp2_data_source_read_callback = {
  _, streamID, buffer, length, flags, _, userData in
  guard let flags, let userData else { return Int(NGHTTP2_ERR_CALLBACK_FAILURE.rawValue) }
  // Safe: user_data is the connection that created the session (HTTP2Connection.createSession
  // passes itself unretained and outlives its session), and only a ServerConnection
  // submits this data source.
  let connection = Unmanaged<ServerConnection>.fromOpaque(userData).takeUnretainedValue()
  return connection.readImmediate(
    streamID, UnsafeMutableRawBufferPointer(start: buffer, count: length), flags)
}
