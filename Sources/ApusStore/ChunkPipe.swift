import Synchronization

/// A bounded async pipe of chunks: one producer `send`s (suspending while more than
/// `capacity` bytes wait), one consumer iterates. Bridges a push-style read into a
/// pull-style write without holding a whole blob.
public final class ChunkPipe: AsyncSequence, Sendable {
  public typealias Element = ArraySlice<UInt8>

  private struct State {
    var chunks: [ArraySlice<UInt8>] = []
    var head = 0
    var bytes = 0
    var end: (any Error)?? = nil
    var consumer: CheckedContinuation<ArraySlice<UInt8>?, any Error>?
    var producer: CheckedContinuation<Void, any Error>?
  }
  private let state = Mutex(State())
  private let capacity: Int

  public init(capacity: Int = 4 << 20) { self.capacity = capacity }

  /// The consumer is gone: stop producing.
  public struct Closed: Error {}

  public func send(_ chunk: ArraySlice<UInt8>) async throws {
    let mustWait = try state.withLock { s throws -> Bool in
      if s.end != nil { throw Closed() }
      if let consumer = s.consumer {
        s.consumer = nil
        consumer.resume(returning: chunk)
        return false
      }
      s.chunks.append(chunk)
      s.bytes += chunk.count
      return s.bytes > capacity
    }
    guard mustWait else { return }
    // A cancelled producer or consumer ends the pipe for both, so neither waits forever.
    try await withTaskCancellationHandler {
      try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
        state.withLock { s in
          if s.end != nil || s.bytes <= capacity { c.resume() } else { s.producer = c }
        }
      }
    } onCancel: {
      finish(CancellationError())
    }
  }

  /// Ends the sequence, with an error for the consumer if `error` is set.
  public func finish(_ error: (any Error)? = nil) {
    state.withLock { s in
      guard s.end == nil else { return }
      s.end = .some(error)
      if let consumer = s.consumer {
        s.consumer = nil
        if let error { consumer.resume(throwing: error) } else { consumer.resume(returning: nil) }
      }
      s.producer?.resume()
      s.producer = nil
    }
  }

  fileprivate func next() async throws -> ArraySlice<UInt8>? {
    try await withTaskCancellationHandler {
      try await nextChunk()
    } onCancel: {
      finish(CancellationError())
    }
  }

  private func nextChunk() async throws -> ArraySlice<UInt8>? {
    try await withCheckedThrowingContinuation { c in
      state.withLock { s in
        if s.head < s.chunks.count {
          let chunk = s.chunks[s.head]
          s.chunks[s.head] = []
          s.head += 1
          s.bytes -= chunk.count
          if s.head == s.chunks.count {
            s.chunks.removeAll(keepingCapacity: true)
            s.head = 0
          }
          if s.bytes <= capacity, let producer = s.producer {
            s.producer = nil
            producer.resume()
          }
          c.resume(returning: chunk)
        } else if let end = s.end {
          if let error = end { c.resume(throwing: error) } else { c.resume(returning: nil) }
        } else {
          s.consumer = c
        }
      }
    }
  }

  public struct AsyncIterator: AsyncIteratorProtocol {
    let pipe: ChunkPipe
    public mutating func next() async throws -> ArraySlice<UInt8>? { try await pipe.next() }
  }

  public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(pipe: self) }
}
