import ApusProto

/// Routes blobs by size: those under `threshold` bytes to `lower`, the rest to `upper`
/// (e.g. small blobs in memory, large ones on disk).
public struct SizePartitioningStore: BlobStore {
  let threshold: Int64
  let lower: any BlobStore
  let upper: any BlobStore

  public init(threshold: Int64, lower: any BlobStore, upper: any BlobStore) {
    self.threshold = threshold
    self.lower = lower
    self.upper = upper
  }

  func store(for d: BlobDigest) -> any BlobStore { d.sizeBytes < threshold ? lower : upper }

  public func findMissing(_ digests: [BlobDigest]) async throws -> [BlobDigest] {
    let small = digests.filter { $0.sizeBytes < threshold }
    let large = digests.filter { $0.sizeBytes >= threshold }
    let missing = Set(try await lower.findMissing(small) + upper.findMissing(large))
    return digests.filter(missing.contains)
  }

  public func read(
    _ digest: BlobDigest, offset: Int64, limit: Int64?,
    into sink: (ArraySlice<UInt8>) async throws -> Void
  ) async throws -> Bool {
    try await store(for: digest).read(digest, offset: offset, limit: limit, into: sink)
  }

  public func readCompressed(
    _ digest: BlobDigest, into sink: (ArraySlice<UInt8>) async throws -> Void
  ) async throws -> Bool {
    try await store(for: digest).readCompressed(digest, into: sink)
  }

  public func write<Chunks: AsyncSequence<ArraySlice<UInt8>, any Error>>(
    _ digest: BlobDigest, from chunks: Chunks
  ) async throws {
    try await store(for: digest).write(digest, from: chunks)
  }

  public func pin(_ digest: BlobDigest) { store(for: digest).pin(digest) }
  public func unpin(_ digest: BlobDigest) { store(for: digest).unpin(digest) }
}
