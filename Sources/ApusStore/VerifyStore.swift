import ApusProto

/// Checks uploads against their digest before the backend commits them: the byte count
/// always, the SHA-256 when `verifyHash` is on. A mismatch fails the write with
/// `invalidArgument` and the backend stores nothing.
///
/// The server puts one of these in front of every CAS it serves unless the configured
/// tree already starts with `verify`, so content is hashed exactly once per upload.
public final class VerifyStore: BlobStore {
  let backend: any BlobStore
  let verifyHash: Bool

  public init(backend: any BlobStore, verifyHash: Bool = true) {
    self.backend = backend
    self.verifyHash = verifyHash
  }

  public func findMissing(_ digests: [BlobDigest]) async throws -> [BlobDigest] {
    try await backend.findMissing(digests)
  }

  public func findMissingNow(_ digests: [BlobDigest]) throws -> [BlobDigest]? {
    try backend.findMissingNow(digests)
  }

  public func readAllNow(_ digest: BlobDigest, maxBytes: Int) throws -> ImmediateRead {
    try backend.readAllNow(digest, maxBytes: maxBytes)
  }

  public func read(
    _ digest: BlobDigest, offset: Int64, limit: Int64?,
    into sink: (ArraySlice<UInt8>) async throws -> Void
  ) async throws -> Bool {
    try await backend.read(digest, offset: offset, limit: limit, into: sink)
  }

  public func readCompressed(
    _ digest: BlobDigest, into sink: (ArraySlice<UInt8>) async throws -> Void
  ) async throws -> Bool {
    try await backend.readCompressed(digest, into: sink)
  }

  public func write<Chunks: AsyncSequence<ArraySlice<UInt8>, any Error>>(
    _ digest: BlobDigest, from chunks: Chunks
  ) async throws {
    try await backend.write(
      digest, from: VerifyingChunks(base: chunks, expected: digest, hash: verifyHash))
  }

  public func pin(_ digest: BlobDigest) { backend.pin(digest) }
  public func unpin(_ digest: BlobDigest) { backend.unpin(digest) }
}

/// Passes chunks through while counting and hashing them; throws at the end (before the
/// consumer sees end-of-sequence) if they do not match the expected digest.
struct VerifyingChunks<Base: AsyncSequence<ArraySlice<UInt8>, any Error>>: AsyncSequence {
  typealias Element = ArraySlice<UInt8>
  let base: Base
  let expected: BlobDigest
  let hash: Bool

  struct AsyncIterator: AsyncIteratorProtocol {
    var base: Base.AsyncIterator
    let expected: BlobDigest
    let hasher: SHA256Hasher?
    var count: Int64 = 0

    mutating func next() async throws -> ArraySlice<UInt8>? {
      guard let chunk = try await base.next() else {
        guard count == expected.sizeBytes else {
          throw StoreError(
            .invalidArgument,
            "blob \(expected) has \(count) bytes, the digest says \(expected.sizeBytes)")
        }
        if let hasher {
          let actual = BlobDigest(hashBytes: hasher.finish(), sizeBytes: count)
          guard actual == expected else {
            throw StoreError(
              .invalidArgument,
              "uploaded content hashes to \(actual.hashHex), not \(expected.hashHex)")
          }
        }
        return nil
      }
      count += Int64(chunk.count)
      guard count <= expected.sizeBytes else {
        throw StoreError(
          .invalidArgument, "blob \(expected) received more than \(expected.sizeBytes) bytes")
      }
      hasher?.update(chunk)
      return chunk
    }
  }

  func makeAsyncIterator() -> AsyncIterator {
    AsyncIterator(base: base.makeAsyncIterator(), expected: expected, hasher: hash ? SHA256Hasher() : nil)
  }
}
