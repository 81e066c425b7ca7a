import ApusProto

/// A fast store (local disk, memory) in front of a slow one (S3, a remote CAS).
///
/// Reads try fast, then slow; a slow hit is copied into fast (streamed, never held whole)
/// when `fillFastOnRead`. Writes go to slow, and to fast too when `writeFast`.
public struct FastSlowStore: BlobStore {
  let fast: any BlobStore
  let slow: any BlobStore
  let fillFastOnRead: Bool
  let writeFast: Bool

  public init(fast: any BlobStore, slow: any BlobStore, fillFastOnRead: Bool = true, writeFast: Bool = true) {
    self.fast = fast
    self.slow = slow
    self.fillFastOnRead = fillFastOnRead
    self.writeFast = writeFast
  }

  public func findMissing(_ digests: [BlobDigest]) async throws -> [BlobDigest] {
    let notFast = try await fast.findMissing(digests)
    return notFast.isEmpty ? [] : try await slow.findMissing(notFast)
  }

  public func read(
    _ digest: BlobDigest, offset: Int64, limit: Int64?,
    into sink: (ArraySlice<UInt8>) async throws -> Void
  ) async throws -> Bool {
    if try await fast.read(digest, offset: offset, limit: limit, into: sink) { return true }
    guard fillFastOnRead else {
      return try await slow.read(digest, offset: offset, limit: limit, into: sink)
    }
    // Copy the whole blob from slow into fast, then serve the range from fast. If the fast
    // side fails (full, broken), the range is served from slow instead.
    let pipe = ChunkPipe()
    let slow = self.slow
    let (found, filled) = await withTaskGroup(of: Result<Bool, any Error>.self) { group in
      group.addTask {
        do {
          let found = try await slow.read(digest, offset: 0, limit: nil) { try await pipe.send(Array($0)) }
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
    case .failure(let error) where !(error is ChunkPipe.Closed): throw error
    default: break
    }
    if filled, try await fast.read(digest, offset: offset, limit: limit, into: sink) { return true }
    return try await slow.read(digest, offset: offset, limit: limit, into: sink)
  }

  public func write<Chunks: AsyncSequence<[UInt8], any Error>>(
    _ digest: BlobDigest, from chunks: Chunks
  ) async throws {
    guard writeFast else { return try await slow.write(digest, from: chunks) }
    // One pass over the input feeds both stores. The slow store is the one that counts: a
    // failing fast tier is dropped from the write, not allowed to fail it.
    let toFast = ChunkPipe(), toSlow = ChunkPipe()
    let fast = self.fast, slow = self.slow
    try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask {
        do { try await fast.write(digest, from: toFast) } catch { toFast.finish(error) }
      }
      group.addTask {
        do { try await slow.write(digest, from: toSlow) } catch {
          toSlow.finish(error)
          throw error
        }
      }
      do {
        for try await chunk in chunks {
          do { try await toFast.send(chunk) } catch is ChunkPipe.Closed {}
          try await toSlow.send(chunk)
        }
        toFast.finish()
        toSlow.finish()
      } catch {
        toFast.finish(error)
        toSlow.finish(error)
      }
      try await group.waitForAll()
    }
  }
}
