import ApusProto
import Synchronization

/// A named store as the factory hands it out: forwards every call to `inner` and records the
/// store's hits, misses, bytes and errors.
///
/// Errors of the caller's own making (its sink or its upload failing, cancellation) are not
/// the store's and are not counted.
public struct InstrumentedStore: BlobStore {
  public let inner: any BlobStore
  let metrics: StoreMetrics

  public init(_ inner: any BlobStore, metrics: StoreMetrics) {
    self.inner = inner
    self.metrics = metrics
  }

  public func findMissing(_ digests: [BlobDigest]) async throws -> [BlobDigest] {
    do {
      let missing = try await inner.findMissing(digests)
      metrics.hits.increment(by: digests.count - missing.count)
      metrics.misses.increment(by: missing.count)
      return missing
    } catch {
      if !Self.isCancellation(error) { metrics.findMissingErrors.increment() }
      throw error
    }
  }

  public func read(
    _ digest: BlobDigest, offset: Int64, limit: Int64?,
    into sink: (ArraySlice<UInt8>) async throws -> Void
  ) async throws -> Bool {
    var bytes = 0
    var sinkFailed = false
    defer { if bytes > 0 { metrics.readBytes.increment(by: bytes) } }
    do {
      let found = try await inner.read(digest, offset: offset, limit: limit) { chunk in
        do {
          try await sink(chunk)
        } catch {
          sinkFailed = true
          throw error
        }
        bytes += chunk.count
      }
      (found ? metrics.hits : metrics.misses).increment()
      return found
    } catch {
      if !sinkFailed && !Self.isCancellation(error) { metrics.readErrors.increment() }
      throw error
    }
  }

  /// Counted like `read`; the bytes are the compressed ones handed out.
  public func readCompressed(
    _ digest: BlobDigest, into sink: (ArraySlice<UInt8>) async throws -> Void
  ) async throws -> Bool {
    var bytes = 0
    var sinkFailed = false
    defer { if bytes > 0 { metrics.readBytes.increment(by: bytes) } }
    do {
      let found = try await inner.readCompressed(digest) { chunk in
        do {
          try await sink(chunk)
        } catch {
          sinkFailed = true
          throw error
        }
        bytes += chunk.count
      }
      // Not found here is not a miss: the caller reads the blob uncompressed next.
      if found { metrics.hits.increment() }
      return found
    } catch {
      if !sinkFailed && !Self.isCancellation(error) { metrics.readErrors.increment() }
      throw error
    }
  }

  public func write<Chunks: AsyncSequence<ArraySlice<UInt8>, any Error>>(
    _ digest: BlobDigest, from chunks: Chunks
  ) async throws {
    let tally = WriteTally()
    defer {
      let bytes = tally.bytes.load(ordering: .relaxed)
      if bytes > 0 { metrics.writtenBytes.increment(by: bytes) }
    }
    do {
      try await inner.write(digest, from: CountingChunks(base: chunks, tally: tally))
    } catch {
      if !tally.sourceFailed.load(ordering: .relaxed) && !Self.isCancellation(error) {
        metrics.writeErrors.increment()
      }
      throw error
    }
  }

  /// Counted like `findMissing` when the inner store answers.
  public func findMissingNow(_ digests: [BlobDigest]) throws -> [BlobDigest]? {
    do {
      guard let missing = try inner.findMissingNow(digests) else { return nil }
      metrics.hits.increment(by: digests.count - missing.count)
      metrics.misses.increment(by: missing.count)
      return missing
    } catch {
      metrics.findMissingErrors.increment()
      throw error
    }
  }

  /// Counted like `read` when the inner store answers. Its only error is the caller's size
  /// limit, which `read` does not count either (there the caller's sink throws it).
  public func readAllNow(_ digest: BlobDigest, maxBytes: Int) throws -> ImmediateRead {
    let answer = try inner.readAllNow(digest, maxBytes: maxBytes)
    switch answer {
    case .found(let bytes):
      metrics.hits.increment()
      if !bytes.isEmpty { metrics.readBytes.increment(by: bytes.count) }
    case .absent: metrics.misses.increment()
    case .wouldWait: break
    }
    return answer
  }

  public func pin(_ digest: BlobDigest) { inner.pin(digest) }
  public func unpin(_ digest: BlobDigest) { inner.unpin(digest) }

  static func isCancellation(_ error: any Error) -> Bool {
    error is CancellationError || Task.isCancelled
  }
}

/// What passed through one write's chunk sequence: bytes, and whether the source failed.
final class WriteTally: Sendable {
  let bytes = Atomic<Int>(0)
  let sourceFailed = Atomic<Bool>(false)
}

/// The caller's chunks, counted into a `WriteTally` as the inner store pulls them.
struct CountingChunks<Base: AsyncSequence<ArraySlice<UInt8>, any Error>>: AsyncSequence {
  typealias Element = ArraySlice<UInt8>
  let base: Base
  let tally: WriteTally

  struct AsyncIterator: AsyncIteratorProtocol {
    var base: Base.AsyncIterator
    let tally: WriteTally

    mutating func next() async throws -> ArraySlice<UInt8>? {
      do {
        guard let chunk = try await base.next() else { return nil }
        tally.bytes.wrappingAdd(chunk.count, ordering: .relaxed)
        return chunk
      } catch {
        tally.sourceFailed.store(true, ordering: .relaxed)
        throw error
      }
    }
  }

  func makeAsyncIterator() -> AsyncIterator { AsyncIterator(base: base.makeAsyncIterator(), tally: tally) }
}
