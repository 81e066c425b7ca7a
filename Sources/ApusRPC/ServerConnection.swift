internal import CNGHTTP2
import Logging
import NIOCore

/// Tunables of the gRPC server shared by every connection.
public struct GRPCServerOptions: Sendable {
  /// Largest request message accepted (after decompression); larger → RESOURCE_EXHAUSTED.
  public var maxReceiveMessageBytes: Int = 4 * 1024 * 1024
  /// HTTP/2 flow-control window per stream, and the inbound/outbound buffering bound.
  public var streamWindowBytes: Int = 1024 * 1024
  /// Connection-level receive window.
  public var connectionWindowBytes: Int = 64 * 1024 * 1024
  public var maxConcurrentStreams: Int = 1000

  public init() {}
}

/// One HTTP/2 connection: an nghttp2 server session driven from the channel's event loop.
///
/// nghttp2 calls back into this object synchronously from `mem_recv`/`mem_send`; every
/// method runs on `eventLoop`. Handler tasks reach it only through `eventLoop.execute`.
final class ServerConnection {
  let eventLoop: any EventLoop
  let router: RPCRouter
  let options: GRPCServerOptions
  let logger: Logger
  let peer: String
  private var session: OpaquePointer?
  private var streams: [Int32: ServerStream] = [:]
  private weak var context: ChannelHandlerContext?
  private var pendingConsume: [Int32] = []
  private var shuttingDown = false
  private var closed = false
  private(set) var started = false
  let activity: ConnectionActivity

  init(
    context: ChannelHandlerContext, router: RPCRouter, options: GRPCServerOptions,
    logger: Logger, activity: ConnectionActivity
  ) {
    self.eventLoop = context.eventLoop
    self.context = context
    self.router = router
    self.options = options
    self.logger = logger
    self.activity = activity
    self.peer = context.remoteAddress.map { "\($0)" } ?? "unknown"
  }

  deinit {
    if let session { nghttp2_session_del(session) }
  }

  /// Creates the nghttp2 session and queues the server SETTINGS.
  func start() -> Bool {
    guard !started else { return true }
    started = true
    var callbacks: OpaquePointer?
    nghttp2_session_callbacks_new(&callbacks)
    defer { nghttp2_session_callbacks_del(callbacks) }
    nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, onBeginHeaders)
    nghttp2_session_callbacks_set_on_header_callback(callbacks, onHeader)
    nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, onFrameRecv)
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, onDataChunkRecv)
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, onStreamClose)

    var option: OpaquePointer?
    nghttp2_option_new(&option)
    defer { nghttp2_option_del(option) }
    // Window updates follow consumption by handlers, not receipt: real back-pressure.
    nghttp2_option_set_no_auto_window_update(option, 1)

    let me = Unmanaged.passUnretained(self).toOpaque()
    guard nghttp2_session_server_new2(&session, callbacks, me, option) == 0 else { return false }
    var settings = [
      nghttp2_settings_entry(
        settings_id: Int32(NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS.rawValue),
        value: UInt32(options.maxConcurrentStreams)),
      nghttp2_settings_entry(
        settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue),
        value: UInt32(options.streamWindowBytes)),
      nghttp2_settings_entry(
        settings_id: Int32(NGHTTP2_SETTINGS_MAX_FRAME_SIZE.rawValue), value: 256 * 1024),
    ]
    nghttp2_submit_settings(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), &settings, settings.count)
    nghttp2_session_set_local_window_size(
      session, UInt8(NGHTTP2_FLAG_NONE.rawValue), 0, Int32(options.connectionWindowBytes))
    flush()
    return true
  }

  // MARK: - I/O

  func receive(_ buffer: ByteBuffer) {
    guard let session, !closed else { return }
    let result = buffer.withUnsafeReadableBytes { bytes in
      nghttp2_session_mem_recv(
        session, bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), bytes.count)
    }
    if result < 0 {
      logger.debug(
        "closing HTTP/2 connection",
        metadata: ["peer": "\(peer)", "error": "\(String(cString: nghttp2_strerror(Int32(result))))"])
    }
    applyPendingConsumption()
    flush()
    if result < 0 { close() }
  }

  /// Serializes whatever nghttp2 has to send and writes it, while the channel is writable.
  func flush() {
    guard let session, let context, !closed else { return }
    var out: ByteBuffer?
    while context.channel.isWritable || out == nil {
      var pointer: UnsafePointer<UInt8>?
      let n = nghttp2_session_mem_send(session, &pointer)
      guard n > 0, let pointer else {
        if n < 0 { close() }
        break
      }
      if out == nil { out = context.channel.allocator.buffer(capacity: max(n, 16 * 1024)) }
      out!.writeBytes(UnsafeRawBufferPointer(start: pointer, count: n))
      if out!.readableBytes >= 256 * 1024 {
        context.writeAndFlush(NIOAny(out!), promise: nil)
        out = nil
        if !context.channel.isWritable { break }
      }
    }
    if let out { context.writeAndFlush(NIOAny(out), promise: nil) }
    if nghttp2_session_want_read(session) == 0 && nghttp2_session_want_write(session) == 0 {
      close()
    }
  }

  func close() {
    guard !closed else { return }
    closed = true
    for stream in streams.values { abandon(stream, RPCError(.unavailable, "connection closed")) }
    streams.removeAll()
    context?.close(promise: nil)
  }

  /// Stops taking new calls: GOAWAY now, close once the running calls finish.
  func beginGracefulShutdown() {
    guard let session, !shuttingDown, !closed else { return }
    shuttingDown = true
    nghttp2_submit_goaway(
      session, UInt8(NGHTTP2_FLAG_NONE.rawValue),
      nghttp2_session_get_last_proc_stream_id(session), UInt32(NGHTTP2_NO_ERROR.rawValue),
      nil, 0)
    flush()
    if streams.isEmpty { close() }
  }

  // MARK: - Stream events

  fileprivate func beginHeaders(_ id: Int32) {
    streams[id] = ServerStream(id: id, maxMessageBytes: options.maxReceiveMessageBytes)
    activity.streamOpened()
  }

  fileprivate func header(_ id: Int32, name: String, value: String) {
    streams[id]?.headers.append((name, value))
  }

  fileprivate func requestHeadersComplete(_ id: Int32) {
    guard let stream = streams[id] else { return }
    startCall(stream)
  }

  fileprivate func data(_ id: Int32, _ bytes: UnsafeRawBufferPointer) {
    guard let session else { return }
    guard let stream = streams[id] else {
      nghttp2_session_consume_connection(session, bytes.count)
      return
    }
    stream.unconsumed += bytes.count
    guard !stream.rejected, let inbound = stream.inbound else {
      pendingConsume.append(id)
      return
    }
    do {
      var pause = false
      for message in try stream.deframer.append(bytes) {
        pause = inbound.push(message) || pause
      }
      if !pause { pendingConsume.append(id) }
    } catch {
      stream.rejected = true
      inbound.finish(error)
      pendingConsume.append(id)
    }
  }

  fileprivate func requestEnded(_ id: Int32) {
    guard let stream = streams[id], let inbound = stream.inbound, !stream.rejected else { return }
    if stream.deframer.isAtMessageBoundary {
      inbound.finish(nil)
    } else {
      inbound.finish(RPCError(.internal, "request ended inside a message"))
    }
  }

  fileprivate func streamClosed(_ id: Int32) {
    guard let stream = streams.removeValue(forKey: id) else { return }
    if let session, stream.unconsumed > 0 {
      nghttp2_session_consume_connection(session, stream.unconsumed)
    }
    abandon(stream, RPCError(.cancelled, "the stream was closed"))
    if shuttingDown && streams.isEmpty {
      let bound = NIOLoopBound(self, eventLoop: eventLoop)
      eventLoop.execute { bound.value.flush(); bound.value.close() }
    }
  }

  private func abandon(_ stream: ServerStream, _ error: RPCError) {
    stream.deadlineTimer?.cancel()
    stream.inbound?.finish(error)
    stream.outbound?.close(error)
    stream.task?.cancel()
    stream.task = nil
    activity.streamClosed()
  }

  private func applyPendingConsumption() {
    guard let session, !pendingConsume.isEmpty else { return }
    for id in pendingConsume {
      guard let stream = streams[id], stream.unconsumed > 0 else { continue }
      if let inbound = stream.inbound, inbound.isPaused, !stream.rejected { continue }
      nghttp2_session_consume(session, id, stream.unconsumed)
      stream.unconsumed = 0
    }
    pendingConsume.removeAll(keepingCapacity: true)
  }

  /// A handler drained its paused request queue: acknowledge what was held back.
  func resumeInbound(_ id: Int32) {
    guard let session, let stream = streams[id], stream.unconsumed > 0 else { return }
    nghttp2_session_consume(session, id, stream.unconsumed)
    stream.unconsumed = 0
    flush()
  }

  // MARK: - Calls

  private func startCall(_ stream: ServerStream) {
    var method = "", path = "", contentType = "", encoding = "identity", timeout: String?
    var metadata: [(name: String, value: String)] = []
    for (name, value) in stream.headers {
      switch name {
      case ":method": method = value
      case ":path": path = value
      case "content-type": contentType = value
      case "grpc-encoding": encoding = value
      case "grpc-timeout": timeout = value
      case "te", "grpc-accept-encoding", "user-agent": break
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
    guard encoding == "identity" || encoding == "gzip" else {
      return reject(
        stream,
        RPCError(.unimplemented, "grpc-encoding \"\(encoding)\" is not supported"))
    }
    guard let handler = router.handler(for: path) else {
      return reject(stream, RPCError(.unimplemented, "unknown method \(path)"))
    }
    var deadline: ContinuousClock.Instant?
    if let timeout {
      guard let duration = GRPCTimeout.parse(timeout) else {
        return reject(stream, RPCError(.internal, "malformed grpc-timeout \"\(timeout)\""))
      }
      deadline = ContinuousClock.now.advanced(by: duration)
      let nanos = duration.components.seconds * 1_000_000_000
        + duration.components.attoseconds / 1_000_000_000
      let bound = NIOLoopBound(self, eventLoop: eventLoop), id = stream.id
      stream.deadlineTimer = eventLoop.scheduleTask(in: .nanoseconds(nanos)) {
        bound.value.deadlineExpired(id)
      }
    }

    let id = stream.id
    let bound = NIOLoopBound(self, eventLoop: eventLoop)
    let loop = eventLoop
    let inbound = InboundMessageQueue(
      highWater: options.streamWindowBytes, decompressLimit: options.maxReceiveMessageBytes,
      compressed: encoding == "gzip",
      onDrained: { loop.execute { bound.value.resumeInbound(id) } })
    let outbound = OutboundQueue(
      highWater: options.streamWindowBytes,
      wake: { loop.execute { bound.value.outboundReady(id) } })
    stream.inbound = inbound
    stream.outbound = outbound
    let context = ServerContext(
      path: path, metadata: Metadata(metadata), deadline: deadline, peer: peer)
    let logger = self.logger
    stream.task = Task {
      do {
        try await handler(RPCRequestStream(queue: inbound), RPCResponseWriter(queue: outbound), context)
        outbound.finish(CallStatus(error: nil))
      } catch {
        let rpcError = RPCError(from: error)
        if rpcError.code == .unknown || rpcError.code == .internal {
          logger.warning("call failed", metadata: ["path": "\(path)", "error": "\(rpcError)"])
        }
        outbound.finish(CallStatus(error: rpcError))
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

  private func reject(_ stream: ServerStream, httpStatus: String) {
    stream.rejected = true
    withHeaderList([(":status", httpStatus)]) { nv, count in
      _ = nghttp2_submit_response(session, stream.id, nv, count, nil)
    }
  }

  private func reject(_ stream: ServerStream, _ error: RPCError) {
    stream.rejected = true
    stream.responseStarted = true
    submitTrailersOnly(stream.id, error)
  }

  private static func responseHeaders() -> [(String, String)] {
    [(":status", "200"), ("content-type", "application/grpc"), ("grpc-accept-encoding", "identity,gzip")]
  }

  private static func trailers(_ error: RPCError?) -> [(String, String)] {
    guard let error else { return [("grpc-status", "0")] }
    var t = [("grpc-status", "\(error.code.rawValue)")]
    if !error.message.isEmpty { t.append(("grpc-message", PercentEncoding.encode(error.message))) }
    if let details = error.statusDetails { t.append(("grpc-status-details-bin", Base64.encode(details))) }
    return t
  }

  private func submitTrailersOnly(_ id: Int32, _ error: RPCError?) {
    withHeaderList(Self.responseHeaders() + Self.trailers(error)) { nv, count in
      _ = nghttp2_submit_response(session, id, nv, count, nil)
    }
  }

  /// A handler queued data or finished: start the response or resume its data source.
  func outboundReady(_ id: Int32) {
    guard let session, let stream = streams[id], let outbound = stream.outbound else { return }
    if !stream.responseStarted {
      stream.responseStarted = true
      if let status = outbound.trailersOnlyStatus {
        submitTrailersOnly(id, status.error)
      } else {
        var provider = nghttp2_data_provider(
          source: nghttp2_data_source(ptr: nil), read_callback: readResponseData)
        withHeaderList(Self.responseHeaders()) { nv, count in
          _ = nghttp2_submit_response(session, id, nv, count, &provider)
        }
      }
    } else {
      nghttp2_session_resume_data(session, id)
    }
    flush()
  }

  fileprivate func readData(
    _ id: Int32, _ buffer: UnsafeMutableRawBufferPointer, _ flags: UnsafeMutablePointer<UInt32>
  ) -> Int {
    guard let stream = streams[id], let outbound = stream.outbound else {
      return Int(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue)
    }
    switch outbound.read(into: buffer) {
    case .data(let n):
      return n
    case .deferred:
      return Int(NGHTTP2_ERR_DEFERRED.rawValue)
    case .end(let n, let status):
      flags.pointee |= UInt32(NGHTTP2_DATA_FLAG_EOF.rawValue | NGHTTP2_DATA_FLAG_NO_END_STREAM.rawValue)
      stream.deadlineTimer?.cancel()
      withHeaderList(Self.trailers(status.error)) { nv, count in
        _ = nghttp2_submit_trailer(session, id, nv, count)
      }
      return n
    }
  }
}

// MARK: - nghttp2 callbacks (C function pointers; user_data is the ServerConnection)

private func connection(_ userData: UnsafeMutableRawPointer?) -> ServerConnection {
  Unmanaged<ServerConnection>.fromOpaque(userData!).takeUnretainedValue()
}

private let onBeginHeaders: nghttp2_on_begin_headers_callback = { _, frame, userData in
  guard let frame, frame.pointee.hd.type == UInt8(NGHTTP2_HEADERS.rawValue),
    frame.pointee.headers.cat == NGHTTP2_HCAT_REQUEST
  else { return 0 }
  connection(userData).beginHeaders(frame.pointee.hd.stream_id)
  return 0
}

private let onHeader: nghttp2_on_header_callback = {
  _, frame, name, nameLength, value, valueLength, _, userData in
  guard let frame, let name, let value,
    frame.pointee.hd.type == UInt8(NGHTTP2_HEADERS.rawValue),
    frame.pointee.headers.cat == NGHTTP2_HCAT_REQUEST
  else { return 0 }
  connection(userData).header(
    frame.pointee.hd.stream_id,
    name: String(decoding: UnsafeBufferPointer(start: name, count: nameLength), as: UTF8.self),
    value: String(decoding: UnsafeBufferPointer(start: value, count: valueLength), as: UTF8.self))
  return 0
}

private let onFrameRecv: nghttp2_on_frame_recv_callback = { _, frame, userData in
  guard let frame else { return 0 }
  let conn = connection(userData)
  let id = frame.pointee.hd.stream_id
  let endStream = frame.pointee.hd.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0
  switch UInt32(frame.pointee.hd.type) {
  case NGHTTP2_HEADERS.rawValue:
    if frame.pointee.headers.cat == NGHTTP2_HCAT_REQUEST { conn.requestHeadersComplete(id) }
    if endStream { conn.requestEnded(id) }
  case NGHTTP2_DATA.rawValue:
    if endStream { conn.requestEnded(id) }
  default:
    break
  }
  return 0
}

private let onDataChunkRecv: nghttp2_on_data_chunk_recv_callback = {
  _, _, streamID, data, length, userData in
  connection(userData).data(streamID, UnsafeRawBufferPointer(start: data, count: length))
  return 0
}

private let onStreamClose: nghttp2_on_stream_close_callback = { _, streamID, _, userData in
  connection(userData).streamClosed(streamID)
  return 0
}

private let readResponseData: nghttp2_data_source_read_callback = {
  _, streamID, buffer, length, flags, _, userData in
  guard let flags else { return Int(NGHTTP2_ERR_CALLBACK_FAILURE.rawValue) }
  return connection(userData).readData(
    streamID, UnsafeMutableRawBufferPointer(start: buffer, count: length), flags)
}
