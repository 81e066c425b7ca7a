import ApusProto

/// The one storage protocol every backend and wrapper implements.
///
/// Keys are validated digests. For a CAS the content hashes to the key; for an action cache
/// the key is the action digest and the content is an encoded `ActionResult`, so stores never
/// assume `content.count == key.sizeBytes`. Writes are streamed and committed atomically:
/// if the chunk sequence throws, nothing becomes visible under the key.
public protocol BlobStore: Sendable {
  /// The subset of `digests` not present, in input order.
  func findMissing(_ digests: [BlobDigest]) async throws -> [BlobDigest]

  /// Streams the content from `offset`, at most `limit` bytes (`nil`: to the end), to
  /// `sink`. Returns false, without calling `sink`, when the key is absent.
  func read(
    _ digest: BlobDigest, offset: Int64, limit: Int64?,
    into sink: (ArraySlice<UInt8>) async throws -> Void
  ) async throws -> Bool

  /// Streams the blob as the one zstd frame the store keeps it in (`compression: zstd`), so
  /// a compressed ByteStream read is served without compressing again. Returns false,
  /// without calling `sink`, when it is not kept compressed (or absent): the caller then
  /// compresses what `read` gives. Optional: the default says "not available".
  func readCompressed(
    _ digest: BlobDigest, into sink: (ArraySlice<UInt8>) async throws -> Void
  ) async throws -> Bool

  /// Stores the concatenated chunks under `digest`.
  func write<Chunks: AsyncSequence<ArraySlice<UInt8>, any Error>>(
    _ digest: BlobDigest, from chunks: Chunks
  ) async throws

  /// Keeps `digest` from being evicted until a matching `unpin` (present yet or not): the
  /// write-behind queue holds what it has not copied to the slow tier yet. Calls nest.
  func pin(_ digest: BlobDigest)
  func unpin(_ digest: BlobDigest)

  /// `findMissing` answered without waiting (a memory store, a cache that knows), so a
  /// small call can be answered on the event loop; nil: it would have to wait (I/O, a lock
  /// held across I/O) and the caller uses `findMissing`. Optional: the default is nil.
  func findMissingNow(_ digests: [BlobDigest]) throws -> [BlobDigest]?

  /// `readAll` answered without waiting, as `findMissingNow`. Optional: the default is
  /// `.wouldWait`.
  func readAllNow(_ digest: BlobDigest, maxBytes: Int) throws -> ImmediateRead
}

/// What a store answers to `readAllNow`.
public enum ImmediateRead: Sendable, Equatable {
  case found([UInt8])
  case absent
  /// The store cannot answer without waiting: call `readAll`.
  case wouldWait
}

extension BlobStore {
  /// Stores that never evict, or that cannot be the durable fast tier of an `async`
  /// fast_slow store (memory, remote stores), ignore pins. Wrappers forward them.
  public func pin(_ digest: BlobDigest) {}
  public func unpin(_ digest: BlobDigest) {}

  /// Stores that do I/O never answer at once.
  public func findMissingNow(_ digests: [BlobDigest]) throws -> [BlobDigest]? { nil }
  public func readAllNow(_ digest: BlobDigest, maxBytes: Int) throws -> ImmediateRead { .wouldWait }

  /// Stores that keep blobs as they are: nothing stored compressed to hand out.
  public func readCompressed(
    _ digest: BlobDigest, into sink: (ArraySlice<UInt8>) async throws -> Void
  ) async throws -> Bool { false }

  public func contains(_ digest: BlobDigest) async throws -> Bool {
    try await findMissing([digest]).isEmpty
  }

  /// Reads a whole value into memory, refusing values over `maxBytes`.
  public func readAll(_ digest: BlobDigest, maxBytes: Int) async throws -> [UInt8]? {
    var out: [UInt8] = []
    let found = try await read(digest, offset: 0, limit: nil) { chunk in
      guard out.count + chunk.count <= maxBytes else {
        throw StoreError(.resourceExhausted, "value \(digest) is larger than \(maxBytes) bytes")
      }
      out.append(contentsOf: chunk)
    }
    return found ? out : nil
  }

  public func writeAll(_ digest: BlobDigest, _ bytes: [UInt8]) async throws {
    try await write(digest, from: SingleChunk(bytes))
  }
}

/// An async sequence of exactly one chunk, for writes of values already in memory.
public struct SingleChunk: AsyncSequence, Sendable {
  public typealias Element = ArraySlice<UInt8>
  let bytes: ArraySlice<UInt8>
  public init(_ bytes: [UInt8]) { self.bytes = bytes[...] }

  public struct AsyncIterator: AsyncIteratorProtocol {
    var bytes: ArraySlice<UInt8>?
    public mutating func next() async throws -> ArraySlice<UInt8>? {
      defer { bytes = nil }
      return bytes
    }
  }
  public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(bytes: bytes) }
}
