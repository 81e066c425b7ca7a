import ApusProto

/// Spreads blobs over several stores by digest, in proportion to their weights. The same
/// digest always lands on the same shard while the list is unchanged.
public struct ShardStore: BlobStore {
  let shards: [any BlobStore]
  /// Cumulative weights: shard i owns hash positions below bounds[i].
  let bounds: [UInt64]

  public init(shards: [(store: any BlobStore, weight: UInt32)]) {
    precondition(!shards.isEmpty, "a shard store needs at least one shard")
    self.shards = shards.map(\.store)
    let total = shards.reduce(UInt64(0)) { $0 + UInt64(max($1.weight, 1)) }
    var acc: UInt64 = 0
    bounds = shards.map { shard in
      acc += UInt64(max(shard.weight, 1))
      return acc == total ? UInt64.max : UInt64.max / total * acc
    }
  }

  func index(for d: BlobDigest) -> Int {
    // The hash is uniformly distributed; its first word picks the shard.
    bounds.firstIndex { d.h0 <= $0 } ?? shards.count - 1
  }

  public func findMissing(_ digests: [BlobDigest]) async throws -> [BlobDigest] {
    var groups = [[BlobDigest]](repeating: [], count: shards.count)
    for d in digests { groups[index(for: d)].append(d) }
    var missing = Set<BlobDigest>()
    for (i, group) in groups.enumerated() where !group.isEmpty {
      missing.formUnion(try await shards[i].findMissing(group))
    }
    return digests.filter(missing.contains)
  }

  public func read(
    _ digest: BlobDigest, offset: Int64, limit: Int64?,
    into sink: (ArraySlice<UInt8>) async throws -> Void
  ) async throws -> Bool {
    try await shards[index(for: digest)].read(digest, offset: offset, limit: limit, into: sink)
  }

  public func readCompressed(
    _ digest: BlobDigest, into sink: (ArraySlice<UInt8>) async throws -> Void
  ) async throws -> Bool {
    try await shards[index(for: digest)].readCompressed(digest, into: sink)
  }

  public func write<Chunks: AsyncSequence<ArraySlice<UInt8>, any Error>>(
    _ digest: BlobDigest, from chunks: Chunks
  ) async throws {
    try await shards[index(for: digest)].write(digest, from: chunks)
  }

  public func pin(_ digest: BlobDigest) { shards[index(for: digest)].pin(digest) }
  public func unpin(_ digest: BlobDigest) { shards[index(for: digest)].unpin(digest) }
}
