import ApusProto
import CoreMetrics
import Synchronization

/// An in-memory store with LRU eviction by total bytes, entry count and idle age.
///
/// The reference backend: every test can use it, and a small AC or a laptop cache can run
/// on it. A write becomes visible only after its last chunk arrived.
public final class MemoryStore: BlobStore {
  public struct Limits: Sendable, Equatable {
    public var maxBytes: Int64?
    public var maxCount: Int?
    public var maxSeconds: UInt32?
    public init(maxBytes: Int64? = nil, maxCount: Int? = nil, maxSeconds: UInt32? = nil) {
      self.maxBytes = maxBytes
      self.maxCount = maxCount
      self.maxSeconds = maxSeconds
    }
  }

  private let limits: Limits
  /// Counts what the limits evict (the named store's `apus_store_evictions_total`).
  private let evictions: Counter?
  /// Values are kept as the chunks they arrived in: no concatenation copy on write, and
  /// reads hand out slices of them.
  private let index = Mutex(LRUIndex<BlobDigest, StoredChunks>())
  static let readChunkBytes = 256 * 1024

  public init(limits: Limits = .init(), evictions: Counter? = nil) {
    self.limits = limits
    self.evictions = evictions
  }

  public var totalBytes: Int64 { index.withLock { $0.totalBytes } }
  public var count: Int { index.withLock { $0.count } }
  /// Entries and bytes held, read under one lock.
  public var usage: StoreUsage {
    index.withLock { StoreUsage(entries: $0.count, bytes: $0.totalBytes) }
  }

  public func findMissing(_ digests: [BlobDigest]) async throws -> [BlobDigest] {
    missing(digests)
  }

  /// Never waits: the index lock is only held for the look-up.
  public func findMissingNow(_ digests: [BlobDigest]) throws -> [BlobDigest]? {
    missing(digests)
  }

  /// The digests not held, expired entries dropped first.
  private func missing(_ digests: [BlobDigest]) -> [BlobDigest] {
    let now = StoreClock.now()
    return index.withLock { idx in
      expire(&idx, now: now)
      return digests.filter { !idx.touch($0, now: now) }
    }
  }

  /// The value held under `digest` (marked as used), expired entries dropped first.
  private func value(of digest: BlobDigest) -> StoredChunks? {
    let now = StoreClock.now()
    return index.withLock { idx in
      expire(&idx, now: now)
      return idx.get(digest, now: now)
    }
  }

  /// Never waits; a value kept as one chunk is handed out without a copy.
  public func readAllNow(_ digest: BlobDigest, maxBytes: Int) throws -> ImmediateRead {
    guard let value = value(of: digest) else { return .absent }
    let size = value.chunks.reduce(0) { $0 + $1.count }
    guard size <= maxBytes else {
      throw StoreError(.resourceExhausted, "value \(digest) is larger than \(maxBytes) bytes")
    }
    switch value {
    case .one(let chunk): return .found(chunk)
    // Free when the slice spans its whole array (a large value written from one array).
    case .many(let chunks) where chunks.count == 1: return .found(Array(chunks[0]))
    case .many(let chunks): return .found(chunks.reduce(into: []) { $0 += $1 })
    }
  }

  public func read(
    _ digest: BlobDigest, offset: Int64, limit: Int64?,
    into sink: (ArraySlice<UInt8>) async throws -> Void
  ) async throws -> Bool {
    guard let value = value(of: digest) else { return false }
    var skip = Int(max(offset, 0))
    var remaining = limit.map { Int(clamping: $0) } ?? Int.max
    for chunk in value.chunks where remaining > 0 {
      guard skip < chunk.count else {
        skip -= chunk.count
        continue
      }
      // Offsets within the chunk; a kept slice need not start at index 0.
      var i = skip
      skip = 0
      let start = chunk.startIndex
      while i < chunk.count && remaining > 0 {
        let j = min(chunk.count, i + min(Self.readChunkBytes, remaining))
        try await sink(chunk[(start + i)..<(start + j)])
        remaining -= j - i
        i = j
      }
    }
    return true
  }

  public func write<Chunks: AsyncSequence<ArraySlice<UInt8>, any Error>>(
    _ digest: BlobDigest, from chunks: Chunks
  ) async throws {
    var value: [ArraySlice<UInt8>] = []
    var size = 0
    for try await chunk in chunks where !chunk.isEmpty {
      value.append(chunk)
      size += chunk.count
    }
    let now = StoreClock.now()
    index.withLock { idx in
      idx.set(digest, StoredChunks(value), size: Int64(size), now: now)
      expire(&idx, now: now)
    }
  }

  private func expire(_ idx: inout LRUIndex<BlobDigest, StoredChunks>, now: UInt32) {
    let evicted = idx.evict(
      maxBytes: limits.maxBytes, maxCount: limits.maxCount, maxAge: limits.maxSeconds, now: now)
    if !evicted.isEmpty { evictions?.increment(by: evicted.count) }
  }
}

/// A blob's bytes as they arrived: the writer's slices (an upload's are slices of its
/// received messages, not copies).
///
/// A small blob in one chunk is kept as an array of its own: an array is one word where a
/// slice is four, and `.many` needs an outer array, which at millions of small entries is
/// tens of bytes each. Making that array is free when the slice spans its whole array (a
/// value written from one array) and a copy of at most `oneChunkBytes` otherwise.
enum StoredChunks {
  case one([UInt8])
  case many([ArraySlice<UInt8>])

  static let oneChunkBytes = 64 << 10

  init(_ chunks: [ArraySlice<UInt8>]) {
    if chunks.count == 1 && chunks[0].count <= Self.oneChunkBytes {
      self = .one(Array(chunks[0]))
    } else {
      self = .many(chunks)
    }
  }

  var chunks: [ArraySlice<UInt8>] {
    switch self {
    case .one(let chunk): [chunk[...]]
    case .many(let chunks): chunks
    }
  }
}
