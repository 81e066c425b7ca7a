internal import CNGHTTP2
import Logging
import NIOCore

/// An nghttp2 session driven from one channel's event loop: the I/O pump, flow control and
/// the DATA paths both sides share. ``ServerConnection`` and ``ClientConnection`` add what
/// differs (who opens streams, what headers and trailers mean).
///
/// nghttp2 calls back synchronously from `mem_recv`/`mem_send`; every method runs on
/// `eventLoop`, and tasks reach the connection only through `eventLoop.execute`.
class HTTP2Connection {
  let eventLoop: any EventLoop
  let options: GRPCServerOptions
  let logger: Logger
  let peer: String
  /// The names of the peer's verified client certificate (server side, mTLS).
  var clientCertificate: ClientCertificateNames?
  private(set) var session: OpaquePointer?
  var streams = StreamTable<CallStream>()
  private weak var context: ChannelHandlerContext?
  /// The channel's allocator, kept so building a DATA frame needs no weak load of `context`.
  private let allocator: ByteBufferAllocator
  private var pendingConsume: [Int32] = []
  private(set) var closed = false
  private(set) var started = false
  /// Request bytes this connection holds, counted against `options.budget`.
  let account: BufferAccount
  /// The channel asked for a read while this connection held too much.
  private var readDeferred = false
  private var housekeeping: RepeatedTask?
  /// A flush is queued on the event loop: the responses that become ready in one loop turn
  /// go out in one write.
  private var flushQueued = false
  /// Bytes serialized for the socket and not yet written (its readable bytes): frames from
  /// `mem_send` and DATA frames assembled by `sendData`. Its storage is reused once the
  /// channel has written it; a download's large batch storage is dropped when idle.
  private var out = ByteBuffer()
  /// `sendData` filled a write batch and paused `mem_send`: write, then continue.
  private var sendPaused = false
  /// `flush` is running; a nested call (from a writability change during a write) is a no-op.
  private var flushing = false
  let openedAt = NIODeadline.now()
  /// Server: the client preface and a first frame have arrived.
  private(set) var prefaceReceived = false
  private(set) var lastReceivedAt = NIODeadline.now()
  private var pingSentAt: NIODeadline?
  /// This connection for timers, without keeping it alive.
  private let weakSelf: NIOLoopBound<WeakConnection>
  /// Hops to the event loop and issues a held-back read if now allowed; called when held
  /// bytes are released or the shared budget has room again.
  private let wakeReader: @Sendable () -> Void
  /// Hop to the event loop for a stream whose request queue drained, or whose response
  /// queue has data: made once here, so a call's queues allocate no closure of their own.
  private let wakeInbound: @Sendable (Int32) -> Void
  private let wakeOutbound: @Sendable (Int32) -> Void

  // What this side sends and why: the server logs and counts every GOAWAY and RST_STREAM.
  /// The GOAWAY this side submitted and has not yet seen go out.
  private var ownGoaway: (reason: GoawayReason, code: UInt32, detail: String)?
  /// RST_STREAMs this side submitted and has not yet seen go out, by stream.
  private var ownResets: [Int32: StreamResetReason] = [:]
  /// The nghttp2 error of an invalid frame per stream, for the RST_STREAM nghttp2 sends for
  /// it; bounded, so a peer cannot grow it.
  private var invalidFrames: [Int32: Int32] = [:]
  /// The last invalid frame's nghttp2 error, for a GOAWAY without debug data.
  private var lastInvalidFrame: Int32?
  /// Server: the peer's resets of calls in progress. A client cancelling every call it
  /// may have open, twice over, is normal; thousands a second are a rapid-reset attack.
  private var resetLimit: TokenBucket
  private var receivedResets = 0
  /// RST_STREAMs sent by reason since the first of that reason, which alone was logged;
  /// the count is logged when the connection closes.
  private var unloggedResets: [StreamResetReason: Int] = [:]

  init(context: ChannelHandlerContext, options: GRPCServerOptions, logger: Logger) {
    self.eventLoop = context.eventLoop
    self.context = context
    self.allocator = context.channel.allocator
    self.options = options
    self.logger = logger
    self.peer = context.remoteAddress.map(Self.describe) ?? "unknown"
    let weak = NIOLoopBound(WeakConnection(), eventLoop: context.eventLoop)
    let loop = context.eventLoop
    let wakeReader: @Sendable () -> Void = {
      loop.execute { weak.value.connection?.resumeReadingIfAllowed() }
    }
    self.weakSelf = weak
    self.wakeReader = wakeReader
    self.wakeInbound = { id in loop.execute { weak.value.connection?.resumeInbound(id) } }
    self.wakeOutbound = { id in loop.execute { weak.value.connection?.outboundReady(id) } }
    self.account = BufferAccount(budget: options.budget, onRelease: wakeReader)
    self.resetLimit = TokenBucket(
      burst: Self.resetBurst(options), perSecond: Self.resetBurst(options) / 10)
    weak.value.connection = self
  }

  /// `127.0.0.1:54321`, `[::1]:54321`: how logs name the peer.
  static func describe(_ address: SocketAddress) -> String {
    guard let ip = address.ipAddress, let port = address.port else { return "\(address)" }
    return ip.contains(":") ? "[\(ip)]:\(port)" : "\(ip):\(port)"
  }

  /// Resets of calls in progress a client may send at once: every call it may have open,
  /// twice; then a tenth of that a second.
  static func resetBurst(_ options: GRPCServerOptions) -> Int {
    max(1000, 2 * options.maxConcurrentStreams)
  }

  deinit {
    housekeeping?.cancel()
    if let session { nghttp2_session_del(session) }
  }

  var isServer: Bool { true }

  /// Arms the connection's timers; a client also creates its session and sends its preface.
  /// A server creates its session when the first bytes arrive, so a connection that never
  /// speaks costs a few hundred bytes instead of nghttp2's buffers (~16 KiB).
  @discardableResult
  func start() -> Bool {
    guard !started else { return true }
    started = true
    let bound = weakSelf
    let interval = TimeAmount(options.housekeepingInterval)
    housekeeping = eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
      bound.value.connection?.checkTimers(now: .now())
    }
    return isServer || createSession()
  }

  /// Creates the nghttp2 session and queues this side's SETTINGS (and, for a client, the
  /// connection preface).
  private func createSession() -> Bool {
    var callbacks: OpaquePointer?
    nghttp2_session_callbacks_new(&callbacks)
    defer { nghttp2_session_callbacks_del(callbacks) }
    nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, onBeginHeaders)
    nghttp2_session_callbacks_set_on_header_callback(callbacks, onHeader)
    nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, onFrameRecv)
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, onDataChunkRecv)
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, onStreamClose)
    nghttp2_session_callbacks_set_on_frame_send_callback(callbacks, onFrameSend)
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(callbacks, onInvalidFrameRecv)
    nghttp2_session_callbacks_set_send_data_callback(callbacks, onSendData)

    var option: OpaquePointer?
    nghttp2_option_new(&option)
    defer { nghttp2_option_del(option) }
    // Window updates follow consumption by handlers, not receipt: real back-pressure.
    nghttp2_option_set_no_auto_window_update(option, 1)
    // nghttp2's own rapid-reset guard counts every RST_STREAM, even for finished calls, and
    // answers with GOAWAY INTERNAL_ERROR at 1000 (+33/s): a client cancelling its calls
    // twice within half a minute tripped it. `resetReceived` applies the limit to calls in
    // progress and says ENHANCE_YOUR_CALM; nghttp2's stays as a backstop, ten times wider.
    let burst = Self.resetBurst(options)
    nghttp2_option_set_stream_reset_rate_limit(option, UInt64(10 * burst), UInt64(burst))

    let me = Unmanaged.passUnretained(self).toOpaque()
    let created =
      isServer
      ? nghttp2_session_server_new2(&session, callbacks, me, option)
      : nghttp2_session_client_new2(&session, callbacks, me, option)
    guard created == 0 else { return false }
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
    if !isServer { prefaceReceived = true }
    flush()
    return true
  }

  // MARK: - Memory bound

  /// Whether the socket may be read: not while this connection holds more than its own
  /// bound, nor while the shared budget is spent and it holds more than its minimum share.
  func mayRead() -> Bool {
    let held = account.heldBytes
    if held >= options.maxConnectionBufferedBytes { return false }
    if let budget = options.budget, held >= budget.minimumShareBytes, budget.isSpent {
      return false
    }
    return true
  }

  /// The channel wants to read: returns false (and arranges a wake-up) if it must wait.
  func shouldRead() -> Bool {
    guard !closed, !mayRead() else { return true }
    readDeferred = true
    account.markPaused()
    if let budget = options.budget, budget.isSpent {
      budget.notifyWhenAvailable(ObjectIdentifier(self), wakeReader)
    }
    // Bytes released between the check and `markPaused` would not wake us: look again.
    if mayRead() {
      readDeferred = false
      return true
    }
    return false
  }

  /// Held bytes were released: issue the read that was held back, if now allowed.
  func resumeReadingIfAllowed() {
    guard readDeferred, !closed else { return }
    guard shouldRead() else { return }
    readDeferred = false
    options.budget?.cancelNotification(ObjectIdentifier(self))
    context?.read()
  }

  // MARK: - Timers

  /// Called every `housekeepingInterval`: handshake, idle and keepalive timeouts.
  func checkTimers(now: NIODeadline) {
    guard !closed else { return }
    if !prefaceReceived {
      if let limit = options.handshakeTimeout, now - openedAt >= TimeAmount(limit) {
        logger.debug(
          "closing a connection that sent no HTTP/2 preface", metadata: ["peer": "\(peer)"])
        close()
      }
      return
    }
    guard let session else { return }
    if let limit = options.keepaliveInterval, !streams.isEmpty, !readDeferred {
      if let sent = pingSentAt {
        if now - sent >= TimeAmount(options.keepaliveTimeout) {
          submitGoaway(
            .keepaliveTimeout, code: UInt32(NGHTTP2_NO_ERROR.rawValue),
            detail: "no answer to a PING within \(options.keepaliveTimeout.components.seconds) s")
          flush()
          close()
          return
        }
      } else if now - lastReceivedAt >= TimeAmount(limit) {
        pingSentAt = now
        nghttp2_submit_ping(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), nil)
        flush()
      }
    }
    // A download's batch storage is not kept by a connection that stopped sending.
    if out.readableBytes == 0 && out.capacity > 64 * 1024 { out = ByteBuffer() }
    timersChecked(now: now)
  }

  /// Subclass hook after the shared timers: per-stream and idle checks.
  func timersChecked(now: NIODeadline) {}

  // MARK: - I/O

  func receive(_ buffer: ByteBuffer) {
    guard !closed else { return }
    if session == nil && isServer && !createSession() { return close() }
    guard let session else { return }
    lastReceivedAt = .now()
    pingSentAt = nil
    let result = buffer.withUnsafeReadableBytes { bytes in
      nghttp2_session_mem_recv(
        session, bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), bytes.count)
    }
    if result < 0 { receiveFailed(Int32(result)) } else { receiveProcessed() }
    applyPendingConsumption()
    flush()
    if result < 0 { close() }
  }

  /// nghttp2 gave up on the connection: say why, with a GOAWAY where the peer speaks HTTP/2.
  private func receiveFailed(_ error: Int32) {
    let text = String(cString: nghttp2_strerror(error))
    logger.debug("closing HTTP/2 connection", metadata: ["peer": "\(peer)", "error": "\(text)"])
    switch error {
    case NGHTTP2_ERR_BAD_CLIENT_MAGIC.rawValue:
      return  // not an HTTP/2 client (HTTP/1.1, TLS to a plaintext port): nothing to say
    case NGHTTP2_ERR_FLOODED.rawValue, NGHTTP2_ERR_TOO_MANY_CONTINUATIONS.rawValue:
      terminate(.flood, code: UInt32(NGHTTP2_ENHANCE_YOUR_CALM.rawValue), detail: text)
    case NGHTTP2_ERR_CALLBACK_FAILURE.rawValue, NGHTTP2_ERR_NOMEM.rawValue:
      terminate(.internalError, code: UInt32(NGHTTP2_INTERNAL_ERROR.rawValue), detail: text)
    default:
      terminate(.protocolError, code: UInt32(NGHTTP2_PROTOCOL_ERROR.rawValue), detail: text)
    }
  }

  /// Submits GOAWAY for the last stream processed; running calls may finish.
  func submitGoaway(_ reason: GoawayReason, code: UInt32, detail: String) {
    guard let session else { return }
    ownGoaway = (reason, code, detail)
    let data = Array(detail.utf8)
    nghttp2_submit_goaway(
      session, UInt8(NGHTTP2_FLAG_NONE.rawValue), nghttp2_session_get_last_proc_stream_id(session),
      code, data, data.count)
  }

  /// Submits GOAWAY and has nghttp2 ignore everything the peer sends from now on and end
  /// the session once it is sent.
  func terminate(_ reason: GoawayReason, code: UInt32, detail: String) {
    guard let session else { return }
    ownGoaway = (reason, code, detail)
    nghttp2_session_terminate_session(session, code)
  }

  /// Bytes written to the channel at once: large enough that a download costs few syscalls,
  /// small enough that a slow socket holds little.
  static let writeBatchBytes = 256 * 1024

  /// Serializes whatever nghttp2 has to send and writes it, while the channel is writable.
  func flush() {
    guard let session, let context, !closed, !flushing else { return }
    flushing = true
    defer { flushing = false }
    while context.channel.isWritable || out.readableBytes == 0 {
      var pointer: UnsafePointer<UInt8>?
      let n = nghttp2_session_mem_send(session, &pointer)
      if n < 0 {
        close()
        break
      }
      if n > 0, let pointer {
        if out.readableBytes == 0 { prepareOut(capacity: max(n, 16 * 1024)) }
        out.writeBytes(UnsafeRawBufferPointer(start: pointer, count: n))
      } else if !sendPaused {
        break
      }
      sendPaused = false
      if out.readableBytes >= Self.writeBatchBytes {
        writeOut(context)
        if closed || !context.channel.isWritable { break }
      }
    }
    writeOut(context)
    if nghttp2_session_want_read(session) == 0 && nghttp2_session_want_write(session) == 0 {
      close()
    }
  }

  /// Writes `out`'s readable bytes and marks them consumed; `out` keeps its storage for reuse.
  private func writeOut(_ context: ChannelHandlerContext) {
    guard out.readableBytes > 0 else { return }
    context.writeAndFlush(NIOAny(out), promise: nil)
    out.moveReaderIndex(to: out.writerIndex)
  }

  /// Makes `out` hold at least `capacity` bytes. Before the first bytes of a write it reuses
  /// `out`'s storage if the channel no longer holds it (`clear` allocates otherwise, without
  /// copying); after, it grows once (copying the few frames before a download's first DATA).
  private func prepareOut(capacity: Int) {
    if out.readableBytes > 0 {
      if out.capacity < capacity { out.reserveCapacity(capacity) }
    } else if out.capacity >= capacity {
      out.clear()
    } else {
      out = allocator.buffer(capacity: capacity)
    }
  }

  /// nghttp2 sends a DATA frame whose payload `readData` left in the outbound queue
  /// (`NGHTTP2_DATA_FLAG_NO_COPY`): appends its 9-byte header, then the payload copied once
  /// from the handler's slices, to `out`. Frames come in `mem_send` order: everything
  /// `mem_send` returned before is already in `out`.
  fileprivate func sendData(
    _ id: Int32, header: UnsafeRawBufferPointer, length: Int, padding: Int
  ) -> Int32 {
    guard let outbound = streams[id]?.outbound else {
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue
    }
    // One batch and the frame that completes it, so appending never reallocates.
    let frameBytes = header.count + padding + length
    prepareOut(capacity: Self.writeBatchBytes + max(frameBytes, 64 * 1024))
    let mark = out.writerIndex
    out.writeBytes(header)
    // We set no padding callback, so nghttp2 pads nothing; handled per RFC 9113 §6.1 anyway.
    if padding > 0 { out.writeInteger(UInt8(padding - 1)) }
    guard outbound.take(length, into: &out) else {
      // Nothing of the frame is written: nghttp2 resets the stream.
      out.moveWriterIndex(to: mark)
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue
    }
    if padding > 1 { out.writeRepeatingByte(0, count: padding - 1) }
    guard out.readableBytes >= Self.writeBatchBytes else { return 0 }
    // `mem_send` returns so `flush` can write the batch (and stop if the socket is full).
    sendPaused = true
    return NGHTTP2_ERR_PAUSE.rawValue
  }

  func close() {
    guard !closed else { return }
    closed = true
    housekeeping?.cancel()
    housekeeping = nil
    options.budget?.cancelNotification(ObjectIdentifier(self))
    for (reason, count) in unloggedResets where count > 0 {
      logProblem(
        reason.logLevel ?? .debug, "sent more RST_STREAM frames on the connection",
        ["peer": "\(peer)", "reason": "\(reason.rawValue)", "count": "\(count)"])
    }
    unloggedResets = [:]
    for stream in streams.all { abandon(stream, RPCError(.unavailable, "connection closed")) }
    streams.removeAll()
    context?.close(promise: nil)
    MemoryReclaimer.shared.requestTrim(on: eventLoop)
  }

  // MARK: - Hooks for the two sides

  /// Server: GOAWAY, then close when the running calls end. A client just closes.
  func beginGracefulShutdown(_ reason: GoawayReason = .shutdown) { close() }

  func beginHeaders(_ id: Int32, request: Bool) {}
  /// Every frame of one read was handled: work deferred to the end of the read runs now.
  func receiveProcessed() {}
  func headersComplete(_ stream: CallStream, request: Bool, endStream: Bool) {}
  /// The peer half-closed the stream after DATA.
  func peerEnded(_ stream: CallStream) {}
  func abandon(_ stream: CallStream, _ error: RPCError) {
    releaseDeframed(stream)
    releaseHeldRequest(stream)
    stream.deadlineTimer?.cancel()
    stream.inbound?.finish(error)
    stream.outbound?.close(error)
    stream.task?.cancel()
    stream.task = nil
  }
  /// All outbound data was sent. Returns the extra nghttp2 data flags to set.
  func outboundFinished(_ stream: CallStream, _ status: CallStatus) -> UInt32 { 0 }

  // MARK: - Shared stream events

  /// One header of a HEADERS frame; the bytes are valid for the call only.
  func header(_ stream: CallStream, name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) {
    stream.headers.append(
      (String(decoding: name, as: UTF8.self), String(decoding: value, as: UTF8.self)))
  }

  fileprivate func header(_ id: Int32, name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer)
  {
    guard let stream = streams[id] else { return }
    header(stream, name: name, value: value)
  }

  /// SETTINGS, PING, WINDOW_UPDATE…: the first one after the preface completes the handshake.
  fileprivate func controlFrameReceived() { markPrefaceReceived() }

  private func markPrefaceReceived() {
    guard !prefaceReceived else { return }
    prefaceReceived = true
    handshakeCompleted()
  }

  /// Server: the peer's preface and first frame arrived.
  func handshakeCompleted() {}

  fileprivate func frameReceived(_ id: Int32, headers: Bool, request: Bool, endStream: Bool) {
    markPrefaceReceived()
    guard let stream = streams[id] else { return }
    if endStream { stream.peerEnded = true }
    if headers {
      headersComplete(stream, request: request, endStream: endStream)
    } else if endStream {
      peerEnded(stream)
    }
  }

  fileprivate func data(_ id: Int32, _ bytes: UnsafeRawBufferPointer) {
    guard let session else { return }
    guard let stream = streams[id] else {
      nghttp2_session_consume_connection(session, bytes.count)
      return
    }
    stream.unconsumed += bytes.count
    stream.lastDataAt = lastReceivedAt
    guard !stream.rejected, stream.inbound != nil || stream.pending != nil else {
      pendingConsume.append(id)
      return
    }
    do {
      var pause = false
      var offset = 0
      // One message at a time: delivering one may read the deframer's state.
      while let message = try stream.deframer.next(bytes, from: &offset) {
        pause = deliver(message, to: stream) || pause
      }
      // Partial-message bytes are held here; complete messages are counted where they wait.
      let partial = stream.deframer.bufferedBytes
      if partial > stream.deframedHeld {
        account.add(partial - stream.deframedHeld)
      } else {
        account.release(stream.deframedHeld - partial)
      }
      stream.deframedHeld = partial
      if !pause { pendingConsume.append(id) }
    } catch {
      stream.rejected = true
      releaseDeframed(stream)
      requestQueue(stream, encoding: stream.pending?.requestEncoding).finish(error)
      pendingConsume.append(id)
    }
  }

  /// Gives a request message to its call. Returns true when the producer should stop
  /// acknowledging. The first message of a call that may be answered on the event loop
  /// waits in the stream itself: a unary request then needs no queue.
  private func deliver(_ message: GRPCMessageDeframer.Message, to stream: CallStream) -> Bool {
    if stream.inbound == nil && stream.pending != nil && stream.heldRequest == nil {
      stream.heldRequest = message
      account.add(message.payload.count)
      return false
    }
    return requestQueue(stream, encoding: stream.pending?.requestEncoding).push(message)
  }

  /// The stream's request queue, made for a server call (with its `grpc-encoding`) when it
  /// first needs one: a held request moves into it first, and an ended request body ends it.
  func requestQueue(_ stream: CallStream, encoding: MessageEncoding?) -> InboundMessageQueue {
    if let inbound = stream.inbound { return inbound }
    let inbound = makeInbound(stream, encoding: encoding ?? .identity)
    if let held = stream.heldRequest.take() {
      account.release(held.payload.count)
      _ = inbound.push(held)
    }
    if stream.peerEnded { finishInbound(stream) }
    return inbound
  }

  /// Drops the request a pending call held, returning its bytes to the budget.
  func releaseHeldRequest(_ stream: CallStream) {
    guard let held = stream.heldRequest.take() else { return }
    account.release(held.payload.count)
  }

  /// Returns the bytes of a stream's incomplete message to the budget.
  func releaseDeframed(_ stream: CallStream) {
    account.release(stream.deframedHeld)
    stream.deframedHeld = 0
  }

  /// Sends RST_STREAM with `code`; the stream's call ends when nghttp2 closes it.
  func reset(_ stream: CallStream, code: UInt32, reason: StreamResetReason? = nil) {
    guard let session else { return }
    if let reason { ownResets[stream.id] = reason }
    nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), stream.id, code)
    flush()
  }

  /// A frame went out: after the last frame of a response whose request is still arriving,
  /// the request body is no longer wanted (RFC 9113 §8.1: RST_STREAM with NO_ERROR).
  fileprivate func frameSent(_ id: Int32, endStream: Bool) {
    guard isServer, endStream, let session, let stream = streams[id], !stream.peerEnded else {
      return
    }
    stream.peerEnded = true
    ownResets[id] = .cancelledByServer
    nghttp2_submit_rst_stream(
      session, UInt8(NGHTTP2_FLAG_NONE.rawValue), id, UInt32(NGHTTP2_NO_ERROR.rawValue))
  }

  // MARK: - GOAWAY and RST_STREAM, logged and counted

  /// A GOAWAY went out: ours (we know why) or nghttp2's (a protocol error; its debug data
  /// says which). Logged on both sides; counted on the server.
  fileprivate func goawaySent(code: UInt32, lastStreamID: Int32, debugData: String) {
    let reason: GoawayReason
    var detail: String
    if let own = ownGoaway, own.code == code {
      ownGoaway = nil
      (reason, detail) = (own.reason, own.detail)
    } else {
      detail = debugData
      switch code {
      case UInt32(NGHTTP2_NO_ERROR.rawValue): reason = .shutdown
      case UInt32(NGHTTP2_ENHANCE_YOUR_CALM.rawValue): reason = .flood
      case UInt32(NGHTTP2_INTERNAL_ERROR.rawValue)
      where debugData.isEmpty && receivedResets >= 1000:
        // nghttp2's stream-reset guard, the only INTERNAL_ERROR it sends without a reason.
        reason = .tooManyResets
        detail = "\(receivedResets) RST_STREAM received: over nghttp2's stream reset rate limit"
      case UInt32(NGHTTP2_INTERNAL_ERROR.rawValue): reason = .internalError
      default: reason = .protocolError
      }
      if detail.isEmpty, let error = lastInvalidFrame {
        detail = String(cString: nghttp2_strerror(error))
      }
    }
    if isServer { ConnectionMetrics.goaways[reason]?.increment() }
    logProblem(
      reason.logLevel, "sent GOAWAY",
      [
        "peer": "\(peer)", "code": "\(Self.codeName(code))", "reason": "\(reason.rawValue)",
        "detail": "\(detail)", "last_stream_id": "\(lastStreamID)",
      ])
  }

  /// An RST_STREAM went out: ours, or nghttp2's for an invalid frame or a refused stream.
  /// The first of each reason on a connection is logged, the others counted.
  fileprivate func resetSent(_ id: Int32, code: UInt32) {
    let own = ownResets.removeValue(forKey: id)
    let invalid = invalidFrames.removeValue(forKey: id)
    guard isServer else { return }
    let reason: StreamResetReason
    if let own {
      reason = own
    } else {
      switch code {
      case UInt32(NGHTTP2_NO_ERROR.rawValue), UInt32(NGHTTP2_CANCEL.rawValue):
        reason = .cancelledByServer
      case UInt32(NGHTTP2_REFUSED_STREAM.rawValue): reason = .refused
      case UInt32(NGHTTP2_INTERNAL_ERROR.rawValue): reason = .internalError
      default: reason = .protocolError
      }
    }
    ConnectionMetrics.resets[reason]?.increment()
    guard let level = reason.logLevel else { return }
    if let unlogged = unloggedResets[reason] {
      unloggedResets[reason] = unlogged + 1
      return
    }
    unloggedResets[reason] = 0
    logProblem(
      level, "sent RST_STREAM",
      [
        "peer": "\(peer)", "stream": "\(id)", "code": "\(Self.codeName(code))",
        "reason": "\(reason.rawValue)",
        "detail": "\(invalid.map { String(cString: nghttp2_strerror($0)) } ?? Self.codeName(code))",
      ])
  }

  /// nghttp2 found a frame invalid; it sends RST_STREAM or GOAWAY for it next.
  fileprivate func invalidFrameReceived(_ id: Int32, error: Int32) {
    lastInvalidFrame = error
    if id != 0 && invalidFrames.count < 64 { invalidFrames[id] = error }
  }

  /// The peer reset a stream. Resets of calls in progress are rate-limited (CVE-2023-44487:
  /// each one cost a handler task); past the limit the connection ends with GOAWAY
  /// ENHANCE_YOUR_CALM and nghttp2 ignores the rest of what the peer sent.
  fileprivate func resetReceived(_ id: Int32) {
    markPrefaceReceived()
    receivedResets += 1
    guard isServer, streams[id] != nil, ownGoaway == nil else { return }
    guard !resetLimit.take(now: .now()) else { return }
    terminate(
      .tooManyResets, code: UInt32(NGHTTP2_ENHANCE_YOUR_CALM.rawValue),
      detail:
        "the client reset calls in progress faster than \(Int(resetLimit.perSecond)) a second "
        + "(burst \(Int(resetLimit.burst))); \(receivedResets) RST_STREAM received")
  }

  /// Logs a line about a peer's misbehaviour or a connection closing: debug lines as they
  /// come, others within the process-wide ``ProtocolLogLimit``.
  func logProblem(_ level: Logger.Level, _ message: Logger.Message, _ metadata: Logger.Metadata) {
    guard logger.logLevel <= level else { return }
    var metadata = metadata
    if level > .debug {
      guard let skipped = ProtocolLogLimit.shared.admit() else { return }
      if skipped > 0 { metadata["lines_skipped"] = "\(skipped)" }
    }
    logger.log(level: level, message, metadata: metadata)
  }

  /// `PROTOCOL_ERROR`, `ENHANCE_YOUR_CALM`… (RFC 9113 §7).
  static func codeName(_ code: UInt32) -> String {
    let name = String(cString: nghttp2_http2_strerror(code))
    return name == "unknown" ? "0x\(String(code, radix: 16))" : name
  }

  /// Ends the inbound messages: cleanly if the body stopped between messages.
  func finishInbound(_ stream: CallStream, error: RPCError? = nil) {
    guard let inbound = stream.inbound, !stream.rejected else { return }
    if let error {
      inbound.finish(error)
    } else if stream.deframer.isAtMessageBoundary {
      inbound.finish(nil)
    } else {
      inbound.finish(RPCError(.internal, "stream ended inside a message"))
    }
  }

  fileprivate func streamClosed(_ id: Int32) {
    ownResets.removeValue(forKey: id)
    invalidFrames.removeValue(forKey: id)
    guard let stream = streams.removeValue(forKey: id) else { return }
    if let session, stream.unconsumed > 0 {
      nghttp2_session_consume_connection(session, stream.unconsumed)
    }
    abandon(stream, RPCError(.cancelled, "the stream was closed"))
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

  /// A task drained its paused inbound queue: acknowledge what was held back.
  func resumeInbound(_ id: Int32) {
    guard let session, let stream = streams[id], stream.unconsumed > 0 else { return }
    nghttp2_session_consume(session, id, stream.unconsumed)
    stream.unconsumed = 0
    flush()
  }

  /// Queues for a new call on `stream`, waking this connection from any thread.
  func makeQueues(_ stream: CallStream, encoding: MessageEncoding) -> (
    InboundMessageQueue, OutboundQueue
  ) {
    (makeInbound(stream, encoding: encoding), makeOutbound(stream))
  }

  /// The request side alone: a call answered on the event loop never needs the other.
  func makeInbound(_ stream: CallStream, encoding: MessageEncoding) -> InboundMessageQueue {
    let inbound = InboundMessageQueue(
      highWater: options.streamWindowBytes, decompressLimit: options.maxReceiveMessageBytes,
      encoding: encoding, account: account, stream: stream.id, onDrained: wakeInbound)
    stream.inbound = inbound
    return inbound
  }

  func makeOutbound(_ stream: CallStream) -> OutboundQueue {
    let outbound = OutboundQueue(
      highWater: options.streamWindowBytes, stream: stream.id, wake: wakeOutbound)
    stream.outbound = outbound
    return outbound
  }

  /// A task queued data or finished: start the stream's outbound side or resume its data.
  func outboundReady(_ id: Int32) {
    guard let session, let stream = streams[id] else { return }
    if stream.started {
      nghttp2_session_resume_data(session, id)
    } else {
      startOutbound(stream)
    }
    queueFlush()
  }

  /// Flushes once after the tasks already queued on the loop have run, so every call that
  /// finishes in this turn shares one `nghttp2_session_mem_send` pass and one socket write.
  private func queueFlush() {
    guard !flushQueued else { return }
    flushQueued = true
    let bound = NIOLoopBound(self, eventLoop: eventLoop)
    eventLoop.execute {
      bound.value.flushQueued = false
      bound.value.flush()
    }
  }

  /// Server: submit response headers (or trailers-only). Client streams start at creation.
  func startOutbound(_ stream: CallStream) {}

  static var dataProvider: nghttp2_data_provider {
    nghttp2_data_provider(source: nghttp2_data_source(ptr: nil), read_callback: readOutboundData)
  }

  fileprivate func readData(
    _ id: Int32, _ buffer: UnsafeMutableRawBufferPointer, _ flags: UnsafeMutablePointer<UInt32>
  ) -> Int {
    guard let stream = streams[id], let outbound = stream.outbound else {
      return Int(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue)
    }
    // The payload stays in the queue until `sendData` copies it straight into `out`.
    let noCopy = UInt32(NGHTTP2_DATA_FLAG_NO_COPY.rawValue)
    switch outbound.peek(capacity: buffer.count) {
    case .data(let n):
      flags.pointee |= noCopy
      return n
    case .deferred:
      return Int(NGHTTP2_ERR_DEFERRED.rawValue)
    case .end(let n, let status):
      flags.pointee |=
        UInt32(NGHTTP2_DATA_FLAG_EOF.rawValue) | outboundFinished(stream, status)
        | (n > 0 ? noCopy : 0)
      return n
    }
  }
}

/// A connection reachable from timers and wake-ups without keeping it alive.
final class WeakConnection {
  weak var connection: HTTP2Connection?
  init(_ connection: HTTP2Connection? = nil) { self.connection = connection }
}

// MARK: - nghttp2 callbacks (C function pointers; user_data is the connection)

/// Runs `body` on the connection nghttp2 hands back as user data, without a retain and
/// release around it: nghttp2 calls back only from inside the connection's own
/// `mem_recv`/`mem_send`, so the connection is alive for the whole call. A connection is
/// weakly referenced (timers, wake-ups), so each retain of it takes the runtime's slow
/// side-table path; per callback that was ~10% of a small RPC's server CPU in a profile.
private func connection<R>(_ userData: UnsafeMutableRawPointer?, _ body: (HTTP2Connection) -> R)
  -> R
{
  Unmanaged<HTTP2Connection>.fromOpaque(userData!)._withUnsafeGuaranteedRef(body)
}

private func isHeaders(_ frame: UnsafePointer<nghttp2_frame>) -> Bool {
  frame.pointee.hd.type == UInt8(NGHTTP2_HEADERS.rawValue)
}

private let onBeginHeaders: nghttp2_on_begin_headers_callback = { _, frame, userData in
  guard let frame, isHeaders(frame) else { return 0 }
  connection(userData) {
    $0.beginHeaders(
      frame.pointee.hd.stream_id, request: frame.pointee.headers.cat == NGHTTP2_HCAT_REQUEST)
  }
  return 0
}

private let onHeader: nghttp2_on_header_callback = {
  _, frame, name, nameLength, value, valueLength, _, userData in
  guard let frame, let name, let value, isHeaders(frame) else { return 0 }
  connection(userData) {
    $0.header(
      frame.pointee.hd.stream_id, name: UnsafeRawBufferPointer(start: name, count: nameLength),
      value: UnsafeRawBufferPointer(start: value, count: valueLength))
  }
  return 0
}

private let onFrameRecv: nghttp2_on_frame_recv_callback = { _, frame, userData in
  guard let frame else { return 0 }
  let endStream = frame.pointee.hd.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0
  switch UInt32(frame.pointee.hd.type) {
  case NGHTTP2_HEADERS.rawValue:
    connection(userData) {
      $0.frameReceived(
        frame.pointee.hd.stream_id, headers: true,
        request: frame.pointee.headers.cat == NGHTTP2_HCAT_REQUEST, endStream: endStream)
    }
  case NGHTTP2_DATA.rawValue:
    connection(userData) {
      $0.frameReceived(
        frame.pointee.hd.stream_id, headers: false, request: false, endStream: endStream)
    }
  case NGHTTP2_RST_STREAM.rawValue:
    connection(userData) { $0.resetReceived(frame.pointee.hd.stream_id) }
  default:
    connection(userData) { $0.controlFrameReceived() }
  }
  return 0
}

private let onInvalidFrameRecv: nghttp2_on_invalid_frame_recv_callback = {
  _, frame, error, userData in
  connection(userData) { $0.invalidFrameReceived(frame?.pointee.hd.stream_id ?? 0, error: error) }
  return 0
}

private let onDataChunkRecv: nghttp2_on_data_chunk_recv_callback = {
  _, _, streamID, data, length, userData in
  connection(userData) { $0.data(streamID, UnsafeRawBufferPointer(start: data, count: length)) }
  return 0
}

private let onFrameSend: nghttp2_on_frame_send_callback = { _, frame, userData in
  guard let frame else { return 0 }
  switch UInt32(frame.pointee.hd.type) {
  case NGHTTP2_HEADERS.rawValue:
    connection(userData) {
      $0.frameSent(
        frame.pointee.hd.stream_id,
        endStream: frame.pointee.hd.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0)
    }
  case NGHTTP2_RST_STREAM.rawValue:
    connection(userData) {
      $0.resetSent(
        frame.pointee.hd.stream_id, code: frame.pointee.rst_stream.error_code)
    }
  case NGHTTP2_GOAWAY.rawValue:
    let goaway = frame.pointee.goaway
    let debugData = String(
      decoding: UnsafeRawBufferPointer(start: goaway.opaque_data, count: goaway.opaque_data_len),
      as: UTF8.self)
    connection(userData) {
      $0.goawaySent(
        code: goaway.error_code, lastStreamID: goaway.last_stream_id, debugData: debugData)
    }
  default:
    break
  }
  return 0
}

private let onStreamClose: nghttp2_on_stream_close_callback = { _, streamID, _, userData in
  connection(userData) { $0.streamClosed(streamID) }
  return 0
}

private let onSendData: nghttp2_send_data_callback = {
  _, frame, header, length, _, userData in
  guard let frame, let header else { return NGHTTP2_ERR_CALLBACK_FAILURE.rawValue }
  return connection(userData) {
    $0.sendData(
      frame.pointee.hd.stream_id, header: UnsafeRawBufferPointer(start: header, count: 9),
      length: length, padding: Int(frame.pointee.data.padlen))
  }
}

private let readOutboundData: nghttp2_data_source_read_callback = {
  _, streamID, buffer, length, flags, _, userData in
  guard let flags else { return Int(NGHTTP2_ERR_CALLBACK_FAILURE.rawValue) }
  return connection(userData) {
    $0.readData(
      streamID, UnsafeMutableRawBufferPointer(start: buffer, count: length), flags)
  }
}
