import NIOCore
import Synchronization

/// Sends messages to the peer on one call (responses on a server, requests on a client).
///
/// `write` returns once the message is queued; it suspends while more than a high-water
/// mark of bytes waits for the peer (HTTP/2 flow control or a slow socket), so a large
/// download is streamed, never held whole.
public struct RPCMessageWriter: Sendable {
  let queue: OutboundQueue
  /// Compresses large responses in the encoding the client accepts; nil: none.
  let compressor: ResponseCompressor?

  init(queue: OutboundQueue, compressor: ResponseCompressor? = nil) {
    self.queue = queue
    self.compressor = compressor
  }

  /// This writer without response compression, for messages that are compressed already
  /// (ByteStream reads of `compressed-blobs`): compressing them again costs CPU and saves
  /// nothing.
  public var uncompressed: RPCMessageWriter { RPCMessageWriter(queue: queue) }

  public func write(_ message: [UInt8]) async throws {
    guard compressor == nil else { return try await write(parts: [message[...]]) }
    try await queue.write([Self.framed(message)[...]])
  }

  /// The gRPC message prefix and `message` in one buffer: one allocation per small
  /// response, and one chunk for nghttp2 to copy from instead of two.
  static func framed(_ message: [UInt8]) -> [UInt8] {
    let length = message.count
    // Safe: all 5 + length bytes are written before `initialized` says they are.
    return [UInt8](unsafeUninitializedCapacity: 5 + length) { buffer, initialized in
      buffer[0] = 0
      buffer[1] = UInt8(truncatingIfNeeded: length >> 24)
      buffer[2] = UInt8(truncatingIfNeeded: length >> 16)
      buffer[3] = UInt8(truncatingIfNeeded: length >> 8)
      buffer[4] = UInt8(truncatingIfNeeded: length)
      _ = UnsafeMutableBufferPointer(rebasing: buffer[5...]).initialize(fromContentsOf: message)
      initialized = 5 + length
    }
  }

  /// Writes one message given as consecutive parts, e.g. an encoded field header and a
  /// payload slice still shared with the store: the payload is first copied when nghttp2
  /// takes it for a DATA frame, not on its way through the call (unless it is compressed).
  public func write(parts: [ArraySlice<UInt8>]) async throws {
    if let compressor {
      // On the handler's task, never the event loop.
      return try await queue.write(compressor.frame(parts))
    }
    let length = parts.reduce(0) { $0 + $1.count }
    var framed: [ArraySlice<UInt8>] = []
    framed.reserveCapacity(parts.count + 1)
    framed.append(grpcMessagePrefix(length: length)[...])
    framed.append(contentsOf: parts)
    try await queue.write(framed)
  }
}

/// The final status of a call, sent as HTTP/2 trailers.
struct CallStatus: Sendable {
  var error: RPCError?
}

/// Bytes waiting to become DATA frames, shared by the handler task (producer) and the
/// event loop's nghttp2 data source callback (consumer).
final class OutboundQueue: Sendable {
  private struct State {
    var chunks = CircularBuffer<ArraySlice<UInt8>>()
    var headOffset = 0
    var queuedBytes = 0
    /// Every response byte written since the call began (framing included), for metrics.
    var writtenBytes = 0
    var status: CallStatus?
    var closed: RPCError?
    /// The peer finished the call before reading all requests: writes are dropped.
    var discarding = false
    var writeWaiter: CheckedContinuation<Void, any Error>?
    /// True while the event loop is idle on this stream and must be woken for new data.
    var needsWake = true
    var wroteAny = false
  }

  enum ReadResult {
    case data(Int)
    case deferred
    /// All data sent: end the DATA and send trailers.
    case end(Int, CallStatus)
  }

  private let state = Mutex(State())
  private let highWater: Int
  /// Wakes the event loop for `stream`: one closure per connection, not one per call.
  private let wake: @Sendable (Int32) -> Void
  private let stream: Int32

  init(highWater: Int, stream: Int32 = 0, wake: @escaping @Sendable (Int32) -> Void) {
    self.stream = stream
    self.highWater = highWater
    self.wake = wake
  }

  func write(_ chunks: [ArraySlice<UInt8>]) async throws {
    let (mustWait, wakeNow) = try state.withLock { s throws -> (Bool, Bool) in
      if s.discarding { return (false, false) }
      if let closed = s.closed { throw closed }
      guard s.status == nil else { throw RPCError(.internal, "write after the call finished") }
      for chunk in chunks where !chunk.isEmpty {
        s.chunks.append(chunk)
        s.queuedBytes += chunk.count
        s.writtenBytes += chunk.count
      }
      s.wroteAny = true
      let wakeNow = s.needsWake
      s.needsWake = false
      return (s.queuedBytes > highWater, wakeNow)
    }
    if wakeNow { wake(stream) }
    guard mustWait else { return }
    try await withTaskCancellationHandler {
      try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
        state.withLock { s in
          if let closed = s.closed {
            c.resume(throwing: closed)
          } else if s.queuedBytes <= highWater / 2 || Task.isCancelled {
            c.resume()
          } else {
            s.writeWaiter = c
          }
        }
      }
    } onCancel: {
      state.withLock { s in
        s.writeWaiter?.resume(throwing: CancellationError())
        s.writeWaiter = nil
      }
    }
  }

  /// For metrics once the handler returned: the status the call already ended with (its
  /// deadline, or CANCELLED if the stream went away; nil while open) and the response
  /// bytes written, framing included.
  var outcome: (ended: RPCStatusCode?, writtenBytes: Int) {
    state.withLock { s in
      let code = s.status.map { $0.error?.code ?? .ok } ?? (s.closed == nil ? nil : .cancelled)
      return (code, s.writtenBytes)
    }
  }

  /// Records the final status. Returns false if the call had already finished.
  @discardableResult
  func finish(_ status: CallStatus) -> Bool {
    let (accepted, wakeNow) = state.withLock { s -> (Bool, Bool) in
      guard s.status == nil, s.closed == nil else { return (false, false) }
      s.status = status
      let w = s.needsWake
      s.needsWake = false
      return (true, w)
    }
    if wakeNow { wake(stream) }
    return accepted
  }

  /// The peer ended the call with its status and no longer reads requests: further writes
  /// succeed without sending, and the caller learns the outcome from the responses.
  func discardFurtherWrites() {
    state.withLock { s in
      s.discarding = true
      s.chunks.removeAll()
      s.queuedBytes = 0
      s.writeWaiter?.resume()
      s.writeWaiter = nil
    }
  }

  /// The stream is gone (reset, connection closed): writers fail from now on.
  func close(_ error: RPCError) {
    state.withLock { s in
      if s.closed == nil { s.closed = error }
      s.chunks.removeAll()
      s.queuedBytes = 0
      s.writeWaiter?.resume(throwing: error)
      s.writeWaiter = nil
    }
  }

  /// Event loop: whether nothing was written, and the status if finished (trailers-only).
  var trailersOnlyStatus: CallStatus? {
    state.withLock { s in s.wroteAny ? nil : s.status }
  }

  /// Event loop, inside nghttp2's data source callback: how many of the queued bytes (at most
  /// `capacity`) the next DATA frame carries, without taking them; ``take(_:into:)`` copies
  /// them once nghttp2 sends the frame (`NGHTTP2_DATA_FLAG_NO_COPY`).
  func peek(capacity: Int) -> ReadResult {
    state.withLock { s in
      let n = min(s.queuedBytes, capacity)
      if n == s.queuedBytes, let status = s.status { return .end(n, status) }
      if n == 0 {
        s.needsWake = true
        return .deferred
      }
      return .data(n)
    }
  }

  /// Event loop, inside nghttp2's send-data callback: appends exactly `count` queued bytes to
  /// `buffer`, the one copy between the handler's slices and the socket. Returns false, and
  /// appends nothing, if fewer are queued (the queue was closed since ``peek(capacity:)``).
  func take(_ count: Int, into buffer: inout ByteBuffer) -> Bool {
    state.withLock { s in
      guard s.queuedBytes >= count else { return false }
      var left = count
      while left > 0, let head = s.chunks.first {
        let available = head.count - s.headOffset
        let n = min(available, left)
        let offset = s.headOffset
        // From the slice's memory: no slice of the slice (and its retain) per frame.
        head.withUnsafeBytes {
          _ = buffer.writeBytes(UnsafeRawBufferPointer(rebasing: $0[offset..<(offset + n)]))
        }
        left -= n
        if n == available {
          s.chunks.removeFirst()
          s.headOffset = 0
        } else {
          s.headOffset += n
        }
      }
      s.queuedBytes -= count
      // The size test first: it is one compare, the waiter's test copies the optional.
      if s.queuedBytes <= highWater / 2, let waiter = s.writeWaiter {
        s.writeWaiter = nil
        waiter.resume()
      }
      return true
    }
  }
}
