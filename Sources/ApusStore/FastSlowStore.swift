import ApusProto
import ApusRPC
import Logging

/// A fast store (local disk, memory) in front of a slow one (S3, a remote CAS).
///
/// Reads try fast, then slow; a slow hit is copied into fast (streamed, never held whole)
/// when `fillFastOnRead`. Writes go to slow, and to fast too when `writeFast`: with `.sync`
/// both in one pass, the fast copy committed only once the slow one is, so a blob the slow
/// tier refused is never reported present; with `.async` to fast only, then through the
/// write-behind queue to slow. While the slow tier is unavailable (its circuit breaker
/// open, timeouts, refused connections), reads and FindMissingBlobs answer from the fast
/// tier alone: a blob only the slow tier has is reported missing rather than making the
/// client wait.
public struct FastSlowStore: BlobStore {
  public enum WritePolicy: Sendable {
    case sync
    case async(WriteBehindQueue)
  }

  let fast: any BlobStore
  let slow: any BlobStore
  let fillFastOnRead: Bool
  let writeFast: Bool
  let policy: WritePolicy
  let logger: Logger

  public init(
    fast: any BlobStore, slow: any BlobStore, fillFastOnRead: Bool = true, writeFast: Bool = true,
    policy: WritePolicy = .sync, logger: Logger = Logger(label: "apus.store.fast_slow")
  ) {
    self.fast = fast
    self.slow = slow
    self.fillFastOnRead = fillFastOnRead
    self.writeFast = writeFast
    self.policy = policy
    self.logger = logger
  }

  /// An error that says the slow tier cannot answer now, rather than anything about the blob.
  static func isOutage(_ error: any Error) -> Bool {
    let code = (error as? StoreError)?.code ?? (error as? RPCError)?.code
    return code == .unavailable || code == .deadlineExceeded
  }

  public func findMissing(_ digests: [BlobDigest]) async throws -> [BlobDigest] {
    let notFast = try await fast.findMissing(digests)
    guard !notFast.isEmpty else { return [] }
    do {
      return try await slow.findMissing(notFast)
    } catch where Self.isOutage(error) {
      logger.debug("slow tier unavailable; answering FindMissingBlobs from the fast tier", metadata: ["error": "\(error)"])
      return notFast
    }
  }

  public func read(
    _ digest: BlobDigest, offset: Int64, limit: Int64?,
    into sink: (ArraySlice<UInt8>) async throws -> Void
  ) async throws -> Bool {
    if try await fast.read(digest, offset: offset, limit: limit, into: sink) { return true }
    do {
      return try await readSlow(digest, offset: offset, limit: limit, into: sink)
    } catch let error as SlowTierOutage {
      logger.debug("slow tier unavailable; \(digest) is served as missing", metadata: ["error": "\(error.underlying)"])
      return false
    }
  }

  /// The fast tier's compressed copy only: a blob the fast tier does not keep compressed is
  /// left to `read`, which also fills the fast tier from the slow one.
  public func readCompressed(
    _ digest: BlobDigest, into sink: (ArraySlice<UInt8>) async throws -> Void
  ) async throws -> Bool {
    try await fast.readCompressed(digest, into: sink)
  }

  /// Thrown by `readSlow` when the slow tier failed for want of availability before any
  /// byte reached the caller's sink, so the read can still answer "absent".
  private struct SlowTierOutage: Error {
    var underlying: any Error
  }

  private func readSlow(
    _ digest: BlobDigest, offset: Int64, limit: Int64?,
    into sink: (ArraySlice<UInt8>) async throws -> Void
  ) async throws -> Bool {
    var delivered = false
    func direct() async throws -> Bool {
      do {
        return try await self.slow.read(digest, offset: offset, limit: limit) { chunk in
          delivered = true
          try await sink(chunk)
        }
      } catch where !delivered && Self.isOutage(error) {
        throw SlowTierOutage(underlying: error)
      }
    }
    guard fillFastOnRead else { return try await direct() }
    // Copy the whole blob from slow into fast, then serve the range from fast. If the fast
    // side fails (full, broken), the range is served from slow instead.
    let pipe = ChunkPipe()
    let slowTier = self.slow
    let (found, filled) = await withTaskGroup(of: Result<Bool, any Error>.self) { group in
      group.addTask {
        do {
          // Copied: a store may keep what it is given, and a reader's slice may be a small
          // part of a larger buffer.
          let found = try await slowTier.read(digest, offset: 0, limit: nil) {
            try await pipe.send(Array($0)[...])
          }
          pipe.finish(found ? nil : StoreError(.notFound, "\(digest) is not in the slow store"))
          return .success(found)
        } catch {
          pipe.finish(error)
          return .failure(error)
        }
      }
      var filled = true
      do {
        try await fast.write(digest, from: pipe)
      } catch {
        pipe.finish(error)
        filled = false
      }
      let found = await group.next() ?? .success(false)
      return (found, filled)
    }
    switch found {
    case .success(false): return false
    case .failure(let error) where Self.isOutage(error): throw SlowTierOutage(underlying: error)
    case .failure(let error) where !(error is ChunkPipe.Closed): throw error
    default: break
    }
    if filled, try await fast.read(digest, offset: offset, limit: limit, into: sink) { return true }
    return try await direct()
  }

  public func write<Chunks: AsyncSequence<ArraySlice<UInt8>, any Error>>(
    _ digest: BlobDigest, from chunks: Chunks
  ) async throws {
    guard writeFast else { return try await slow.write(digest, from: chunks) }
    switch policy {
    case .sync: try await writeBoth(digest, from: chunks)
    case .async(let queue): try await writeBehind(digest, from: chunks, queue)
    }
  }

  /// One pass over the input feeds both tiers. The slow store is the one that counts: a
  /// failing fast tier is dropped from the write, and the fast copy is committed only after
  /// the slow one (its input ends then), or abandoned if the slow write failed.
  private func writeBoth<Chunks: AsyncSequence<ArraySlice<UInt8>, any Error>>(
    _ digest: BlobDigest, from chunks: Chunks
  ) async throws {
    let toFast = ChunkPipe(), toSlow = ChunkPipe()
    let fast = self.fast, slow = self.slow
    async let fastDone: Void = {
      do { try await fast.write(digest, from: toFast) } catch { toFast.finish(error) }
    }()
    async let slowDone = Self.write(toSlow, to: slow, digest)
    do {
      for try await chunk in chunks {
        do { try await toFast.send(chunk) } catch is ChunkPipe.Closed {}
        try await toSlow.send(chunk)
      }
      toSlow.finish()
    } catch {
      toSlow.finish(error)
      toFast.finish(error)
    }
    let slowResult = await slowDone
    switch slowResult {
    case .success: toFast.finish()
    case .failure(let error): toFast.finish(error)
    }
    await fastDone
    try slowResult.get()
  }

  /// Lists the blob in the write-behind journal, writes it to the fast tier (pinned there)
  /// and returns; the queue's copier takes it from there.
  private func writeBehind<Chunks: AsyncSequence<ArraySlice<UInt8>, any Error>>(
    _ digest: BlobDigest, from chunks: Chunks, _ queue: WriteBehindQueue
  ) async throws {
    guard try await queue.reserve(digest) else {
      // Queued already, so listed and pinned: only the fast copy is written again.
      return try await fast.write(digest, from: chunks)
    }
    fast.pin(digest)
    do {
      try await fast.write(digest, from: chunks)
    } catch {
      await queue.release(digest)
      fast.unpin(digest)
      throw error
    }
    // The queue keeps one pin per blob until it is copied.
    if !queue.commit(digest) { fast.unpin(digest) }
  }

  /// Writes what comes through `pipe` to `store`; on failure ends the pipe, so its producer
  /// stops, and returns the error.
  private static func write(
    _ pipe: ChunkPipe, to store: any BlobStore, _ digest: BlobDigest
  ) async -> Result<Void, any Error> {
    do {
      try await store.write(digest, from: pipe)
      return .success(())
    } catch {
      pipe.finish(error)
      return .failure(error)
    }
  }

  /// Copies queued blobs to the slow tier until cancelled (a child task of the server).
  public func runWriteBehind() async {
    guard case .async(let queue) = policy else { return }
    let fast = self.fast
    await queue.run(copy: copyToSlow, settled: { fast.unpin($0) })
  }

  /// Streams one blob from the fast tier into the slow one.
  @Sendable func copyToSlow(_ digest: BlobDigest) async throws -> WriteBehindQueue.CopyResult {
    let pipe = ChunkPipe()
    let slow = self.slow
    async let slowDone = Self.write(pipe, to: slow, digest)
    let found: Bool
    do {
      // Copied, as when filling the fast tier: a store may keep what it is given.
      found = try await fast.read(digest, offset: 0, limit: nil) {
        try await pipe.send(Array($0)[...])
      }
      pipe.finish(found ? nil : StoreError(.notFound, "\(digest) is no longer in the fast tier"))
    } catch is ChunkPipe.Closed {
      found = true  // the slow write ended first: its result says why
    } catch {
      pipe.finish(error)
      _ = await slowDone
      if (error as? StoreError)?.code == .dataLoss { return .gone }
      throw error
    }
    let result = await slowDone
    guard found else { return .gone }
    try result.get()
    return .copied
  }
}
