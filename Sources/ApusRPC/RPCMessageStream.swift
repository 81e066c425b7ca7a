import NIOCore
import Synchronization

/// The messages from the peer on one call (requests on a server, responses on a client),
/// as an async sequence of payloads.
///
/// Back-pressure: the connection stops acknowledging (HTTP/2 WINDOW_UPDATE) a stream's
/// bytes while more than a high-water mark of decoded messages waits here, and resumes when
/// the handler drains them, so a slow handler never makes the server buffer a whole upload.
public struct RPCMessageStream: AsyncSequence, Sendable {
  public typealias Element = [UInt8]
  let queue: InboundMessageQueue

  public struct AsyncIterator: AsyncIteratorProtocol, Sendable {
    let queue: InboundMessageQueue
    public mutating func next() async throws -> [UInt8]? { try await queue.next() }
  }

  public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(queue: queue) }

  /// The single message of a unary or server-streaming call.
  public func single() async throws -> [UInt8] {
    var it = makeAsyncIterator()
    guard let first = try await it.next() else {
      throw RPCError(.internal, "expected one request message, got none")
    }
    guard try await it.next() == nil else {
      throw RPCError(.internal, "expected one request message, got more")
    }
    return first
  }
}

/// A queue of decoded messages fed by the event loop and drained by the handler task.
final class InboundMessageQueue: Sendable {
  private struct State {
    /// The oldest queued message, kept outside `messages`: a unary call's one request
    /// never allocates the ring's storage.
    var first: GRPCMessageDeframer.Message?
    var messages = CircularBuffer<GRPCMessageDeframer.Message>()
    var bufferedBytes = 0
    /// Every message's bytes since the call began, for metrics.
    var receivedBytes = 0
    var end: RPCError?? = nil  // .some(nil): clean end; .some(error): failed
    var waiter: CheckedContinuation<GRPCMessageDeframer.Message?, any Error>?
    var paused = false
  }

  private let state = Mutex(State())
  let highWater: Int
  let lowWater: Int
  let decompressLimit: Int
  /// The call's `grpc-encoding`: how messages flagged compressed are inflated.
  let encoding: MessageEncoding
  /// Called (off the event loop) with `stream` when a paused queue drains below
  /// `lowWater`: one closure per connection, not one per call.
  private let onDrained: @Sendable (Int32) -> Void
  private let stream: Int32
  /// Where queued bytes are counted until the handler takes them.
  private let account: BufferAccount?

  init(
    highWater: Int, decompressLimit: Int, encoding: MessageEncoding = .identity,
    account: BufferAccount? = nil,
    stream: Int32 = 0, onDrained: @escaping @Sendable (Int32) -> Void
  ) {
    self.highWater = highWater
    self.lowWater = highWater / 4
    self.decompressLimit = decompressLimit
    self.encoding = encoding
    self.account = account
    self.onDrained = onDrained
    self.stream = stream
  }

  /// Event loop: adds a message. Returns true when the producer should stop acknowledging.
  /// After the sequence ended, messages are dropped.
  func push(_ message: GRPCMessageDeframer.Message) -> Bool {
    state.withLock { s in
      guard s.end == nil else { return false }
      s.receivedBytes += message.payload.count
      if let waiter = s.waiter {
        s.waiter = nil
        waiter.resume(returning: message)
        return false
      }
      if s.first == nil && s.messages.isEmpty {
        s.first = message
      } else {
        s.messages.append(message)
      }
      s.bufferedBytes += message.payload.count
      account?.add(message.payload.count)
      if s.bufferedBytes >= highWater { s.paused = true }
      return s.paused
    }
  }

  var isPaused: Bool { state.withLock { $0.paused } }

  /// Bytes of every request message received so far.
  var receivedBytes: Int { state.withLock { $0.receivedBytes } }

  /// Ends the sequence: `nil` after the last message, or an error to throw at once.
  func finish(_ error: RPCError?) {
    let (dropped, resume) = state.withLock { s -> (Int, Bool) in
      guard s.end == nil else { return (0, false) }
      s.end = .some(error)
      if let waiter = s.waiter {
        s.waiter = nil
        if let error { waiter.resume(throwing: error) } else { waiter.resume(returning: nil) }
      }
      return error == nil ? (0, false) : Self.dropMessages(&s)
    }
    released(dropped, resume: resume)
  }

  /// The reader is gone: drops queued messages (and any that arrive later), granting their
  /// window again so a peer still sending a body it no longer needs is not stuck.
  func discard() {
    let (dropped, resume) = state.withLock { s -> (Int, Bool) in
      if s.end == nil { s.end = .some(RPCError(.cancelled, "the call has finished")) }
      return Self.dropMessages(&s)
    }
    released(dropped, resume: resume)
  }

  private static func dropMessages(_ s: inout State) -> (Int, Bool) {
    let dropped = s.bufferedBytes
    let resume = s.paused
    s.first = nil
    s.messages.removeAll()
    s.bufferedBytes = 0
    s.paused = false
    return (dropped, resume)
  }

  private func released(_ bytes: Int, resume: Bool) {
    account?.release(bytes)
    if resume { onDrained(stream) }
  }

  deinit {
    account?.release(state.withLock { $0.bufferedBytes })
  }

  /// The oldest queued message.
  private static func pop(_ s: inout State) -> GRPCMessageDeframer.Message? {
    if let m = s.first {
      s.first = nil
      return m
    }
    return s.messages.popFirst()
  }

  func next() async throws -> [UInt8]? {
    guard let message = try await nextFramed() else { return nil }
    guard message.compressed else { return message.payload }
    return try encoding.decompress(message.payload, limit: decompressLimit)
  }

  private func nextFramed() async throws -> GRPCMessageDeframer.Message? {
    enum Outcome {
      case message(GRPCMessageDeframer.Message, resume: Bool)
      case end(RPCError?)
      case wait
    }
    let outcome: Outcome = state.withLock { s in
      if let m = Self.pop(&s) {
        s.bufferedBytes -= m.payload.count
        var resume = false
        if s.paused && s.bufferedBytes <= lowWater {
          s.paused = false
          resume = true
        }
        return .message(m, resume: resume)
      }
      if let end = s.end { return .end(end) }
      return .wait
    }
    switch outcome {
    case .message(let m, let resume):
      account?.release(m.payload.count)
      if resume { onDrained(stream) }
      return m
    case .end(let error):
      if let error { throw error }
      return nil
    case .wait:
      return try await withTaskCancellationHandler {
        try await withCheckedThrowingContinuation { continuation in
          let resume = state.withLock { s -> Bool in
            if let m = Self.pop(&s) {
              s.bufferedBytes -= m.payload.count
              account?.release(m.payload.count)
              continuation.resume(returning: m)
              if s.paused && s.bufferedBytes <= lowWater {
                s.paused = false
                return true
              }
            } else if let end = s.end {
              if let error = end {
                continuation.resume(throwing: error)
              } else {
                continuation.resume(returning: nil)
              }
            } else if Task.isCancelled {
              continuation.resume(throwing: CancellationError())
            } else {
              s.waiter = continuation
            }
            return false
          }
          if resume { onDrained(stream) }
        }
      } onCancel: {
        state.withLock { s in
          if let waiter = s.waiter {
            s.waiter = nil
            waiter.resume(throwing: CancellationError())
          }
        }
      }
    }
  }
}
