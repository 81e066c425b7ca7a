import ApusProto
import Synchronization

/// Remembers that blobs exist (answers of `findMissing`, successful writes) for
/// `maxSeconds`, so repeated FindMissingBlobs on a slow backend are answered locally.
/// Only positive answers are kept: a blob reported missing is asked again next time.
public final class ExistenceCacheStore: BlobStore {
  let backend: any BlobStore
  let maxSeconds: UInt32
  let maxCount: Int
  private let known = Mutex(LRUIndex<BlobDigest, Void>())

  public init(backend: any BlobStore, maxSeconds: UInt32, maxCount: Int = 1_000_000) {
    self.backend = backend
    self.maxSeconds = maxSeconds
    self.maxCount = maxCount
  }

  private func remember(_ digests: some Sequence<BlobDigest>) {
    let now = StoreClock.now()
    known.withLock { idx in
      for d in digests { idx.set(d, (), size: 0, now: now) }
      _ = idx.evict(maxBytes: nil, maxCount: maxCount, maxAge: maxSeconds, now: now)
    }
  }

  public func findMissing(_ digests: [BlobDigest]) async throws -> [BlobDigest] {
    let unknown = unknown(digests)
    guard !unknown.isEmpty else { return [] }
    return learn(unknown, missing: try await backend.findMissing(unknown))
  }

  /// Answers at once when every digest is known, or when the backend answers at once.
  public func findMissingNow(_ digests: [BlobDigest]) throws -> [BlobDigest]? {
    let unknown = unknown(digests)
    guard !unknown.isEmpty else { return [] }
    guard let missing = try backend.findMissingNow(unknown) else { return nil }
    return learn(unknown, missing: missing)
  }

  /// The digests not known to exist, expired knowledge dropped first.
  private func unknown(_ digests: [BlobDigest]) -> [BlobDigest] {
    let now = StoreClock.now()
    return known.withLock { idx in
      _ = idx.evict(maxBytes: nil, maxCount: maxCount, maxAge: maxSeconds, now: now)
      return digests.filter { !idx.contains($0) }
    }
  }

  /// Remembers the digests of `unknown` the backend holds; returns its `missing` answer.
  private func learn(_ unknown: [BlobDigest], missing: [BlobDigest]) -> [BlobDigest] {
    let missingSet = Set(missing)
    remember(unknown.filter { !missingSet.contains($0) })
    return missing
  }

  public func readAllNow(_ digest: BlobDigest, maxBytes: Int) throws -> ImmediateRead {
    let answer = try backend.readAllNow(digest, maxBytes: maxBytes)
    if answer == .absent { known.withLock { _ = $0.remove(digest) } }
    return answer
  }

  public func read(
    _ digest: BlobDigest, offset: Int64, limit: Int64?,
    into sink: (ArraySlice<UInt8>) async throws -> Void
  ) async throws -> Bool {
    let found = try await backend.read(digest, offset: offset, limit: limit, into: sink)
    if !found { known.withLock { _ = $0.remove(digest) } }
    return found
  }

  public func readCompressed(
    _ digest: BlobDigest, into sink: (ArraySlice<UInt8>) async throws -> Void
  ) async throws -> Bool {
    try await backend.readCompressed(digest, into: sink)
  }

  public func write<Chunks: AsyncSequence<ArraySlice<UInt8>, any Error>>(
    _ digest: BlobDigest, from chunks: Chunks
  ) async throws {
    try await backend.write(digest, from: chunks)
    remember([digest])
  }

  public func pin(_ digest: BlobDigest) { backend.pin(digest) }
  public func unpin(_ digest: BlobDigest) { backend.unpin(digest) }
}
