import ApusProto
import ApusRPC

#if canImport(Glibc)
  import Glibc
#endif

/// `compression: zstd`: each blob is a `.zst` file, one zstd frame and a `ZstdEntryTrailer`.
/// Compression runs on the writer's task as the chunks arrive; file I/O stays on the pool.
extension FilesystemStore {
  /// Writes what `producer` passes as a `.zst` entry; the rest as `write(_:producer:)`.
  func writeZstd(
    _ digest: BlobDigest, producer: ((ArraySlice<UInt8>) async throws -> Void) async throws -> Void
  ) async throws {
    var mayEvict = true
    // The content's size is what a write may need at most; the file is usually smaller.
    if options.minFreeBytes > 0 { try await keepHeadroom(for: digest.sizeBytes) }
    let temp = newTempPath()
    let fd = try await createTemp(temp, expected: digest.sizeBytes, mayEvict: &mayEvict)
    var written: Int64 = 0  // content bytes taken in
    var stored: Int64 = 0  // frame bytes in the file
    var isOpen = true
    do {
      // No pledged size: an action-cache value's length is not its key's size.
      let compressor = try ZstdCompressor(
        level: Int32(options.compression.level),
        windowLog: StoredZstd.windowLog(forSize: digest.sizeBytes, level: options.compression.level))
      var pending: [UInt8] = []
      // Gathers the frame into writes of at least 64 KiB, as the uncompressed path does.
      func drain(flush: Bool) async throws {
        while let out = try compressor.next(maxBytes: Self.readChunkBytes) {
          pending += out
          if pending.count >= Self.writeBufferBytes {
            let rest = max(digest.sizeBytes - written, Int64(pending.count))
            try await append(pending[...], to: fd, temp: temp, rest: rest, mayEvict: &mayEvict)
            stored += Int64(pending.count)
            pending.removeAll(keepingCapacity: true)
          }
        }
        if flush, !pending.isEmpty {
          try await append(
            pending[...], to: fd, temp: temp, rest: Int64(pending.count), mayEvict: &mayEvict)
          stored += Int64(pending.count)
          pending.removeAll()
        }
      }
      try await producer { chunk in
        compressor.push(chunk)
        written += Int64(chunk.count)
        try await drain(flush: false)
      }
      compressor.finish()
      try await drain(flush: true)
      // A blob that hashes to its name needs no second pass: the name is its checksum, as
      // for a plain file. Other values (action results) are small; they are hashed back.
      let hash =
        try layout(for: digest, written: written) == .plain
        ? digest.hashBytes
        : try await contentHash(fd, storedLength: stored, contentLength: written, temp: temp)
      let trailer = ZstdEntryTrailer(storedLength: stored, contentLength: written, sha256: hash)
        .bytes
      try await append(
        trailer[...], to: fd, temp: temp, rest: Int64(trailer.count), mayEvict: &mayEvict)
      try await commit(fd, temp: temp, digest: digest, layout: .zstd)
      close(fd)
      isOpen = false
      try await index(digest, .zstd, fileSize: stored + Int64(trailer.count))
    } catch {
      if isOpen { close(fd) }
      unlink(temp)
      throw error
    }
  }

  /// The SHA-256 of the content of the frame written so far to `fd`.
  private func contentHash(_ fd: Int32, storedLength: Int64, contentLength: Int64, temp: String)
    async throws -> [UInt8]
  {
    let decoded: Result<[UInt8], StoreError>
    do {
      decoded = try await pool.runIfActive {
        Self.decodeStored(fd, storedLength: storedLength, contentLength: contentLength)
      }
    } catch {
      throw failure(error, doing: "write a blob", path: temp)
    }
    switch decoded {
    case .success(let hash): return hash
    case .failure(let problem):
      throw StoreError(.internal, "filesystem store \"\(name)\": the value just written \(problem.message)")
    }
  }

  /// Decompresses and hashes a whole stored frame, checking it yields exactly
  /// `contentLength` bytes. Blocking: for the thread pool.
  static func decodeStored(_ fd: Int32, storedLength: Int64, contentLength: Int64)
    -> Result<[UInt8], StoreError>
  {
    guard let decompressor = try? ZstdDecompressor(outputLimit: Int(contentLength)) else {
      return .failure(StoreError(.resourceExhausted, "cannot allocate a zstd decoder"))
    }
    let hasher = SHA256Hasher()
    var at: Int64 = 0
    while at < storedLength {
      let want = Int(min(Int64(readChunkBytes), storedLength - at))
      guard let chunk = try? FileCalls.read(fd, count: want, at: at), chunk.count == want else {
        return .failure(StoreError(.dataLoss, "cannot be read back whole"))
      }
      at += Int64(want)
      decompressor.push(chunk)
      do throws(RPCError) {
        while let out = try decompressor.next(maxBytes: readChunkBytes) { hasher.update(out) }
      } catch {
        return .failure(StoreError(.dataLoss, "does not decompress (\(error.message))"))
      }
    }
    guard (try? decompressor.finish()) != nil, decompressor.totalOutput == Int(contentLength) else {
      return .failure(StoreError(.dataLoss, "does not decompress to \(contentLength) bytes"))
    }
    return .success(hasher.finish())
  }

  /// The trailer of the open `.zst` file `fd`, or the reason it has none.
  /// The next piece of a stored frame, read on the thread pool: a short read is damage.
  private func frameChunk(_ digest: BlobDigest, fd: Int32, path: String, at: Int64, storedLength: Int64)
    async throws -> [UInt8]
  {
    let want = Int(min(Int64(Self.readChunkBytes), storedLength - at))
    let chunk: [UInt8]
    do {
      chunk = try await pool.runIfActive { try FileCalls.read(fd, count: want, at: at) }
    } catch {
      throw failure(error, doing: "read a blob", path: path)
    }
    guard chunk.count == want else {
      throw await damaged(digest, .zstd, "ends at \(at + Int64(chunk.count)) of \(storedLength) bytes")
    }
    return chunk
  }

  private func zstdTrailer(_ fd: Int32, path: String) async throws -> ZstdEntryTrailer? {
    do {
      return try await pool.runIfActive { () throws -> ZstdEntryTrailer? in
        let size = try FileCalls.size(fd)
        guard size >= ZstdEntryTrailer.byteCount else { return nil }
        let tail = try FileCalls.read(
          fd, count: ZstdEntryTrailer.byteCount, at: size - Int64(ZstdEntryTrailer.byteCount))
        return ZstdEntryTrailer(tail, fileSize: size)
      }
    } catch {
      throw failure(error, doing: "read a blob", path: path)
    }
  }

  /// `read` of a `.zst` entry: decompresses from the frame's start, drops what lies before
  /// `offset`, stops after the range unless the whole content is hashed (`verify_reads`).
  /// Holds one decompressed chunk and zstd's window (the level's, ≤ 8 MiB at 19).
  func readZstd(
    _ digest: BlobDigest, fd: Int32, path: String, offset: Int64, limit: Int64?,
    into sink: (ArraySlice<UInt8>) async throws -> Void
  ) async throws -> Bool {
    guard let trailer = try await zstdTrailer(fd, path: path) else {
      throw await damaged(digest, .zstd, "has no valid length and checksum trailer")
    }
    let length = trailer.contentLength
    let start = min(max(offset, 0), length)
    let end = limit.map { $0 >= length - start ? length : start + max($0, 0) } ?? length
    let hasher = options.verifyReads ? SHA256Hasher() : nil
    if hasher == nil && start >= end { return true }
    let decompressor: ZstdDecompressor
    do throws(RPCError) {
      decompressor = try ZstdDecompressor(outputLimit: Int(length))
    } catch {
      throw StoreError(error.code, "filesystem store \"\(name)\": \(error.message)")
    }
    var position: Int64 = 0  // content bytes decoded
    var at: Int64 = 0  // frame bytes read
    var held: ArraySlice<UInt8>?
    reading: while at < trailer.storedLength {
      let chunk = try await frameChunk(digest, fd: fd, path: path, at: at, storedLength: trailer.storedLength)
      at += Int64(chunk.count)
      decompressor.push(chunk)
      while true {
        let out: [UInt8]
        do throws(RPCError) {
          guard let next = try decompressor.next(maxBytes: Self.readChunkBytes) else { break }
          out = next
        } catch {
          throw await damaged(digest, .zstd, "does not decompress (\(error.message))")
        }
        hasher?.update(out)
        let low = max(start, position), high = min(end, position + Int64(out.count))
        if low < high {
          if let held { try await sink(held) }
          held = out[Int(low - position)..<Int(high - position)]
        }
        position += Int64(out.count)
        if hasher == nil && position >= end { break reading }
      }
    }
    if hasher != nil || position < end {
      guard (try? decompressor.finish()) != nil, position == length else {
        throw await damaged(digest, .zstd, "does not decompress to \(length) bytes")
      }
    }
    if let hasher, hasher.finish() != trailer.sha256 {
      throw await damaged(digest, .zstd, "does not hash to its checksum")
    }
    if let held { try await sink(held) }
    return true
  }

  /// Streams the stored zstd frame of `digest` as it is on disk. False, without calling
  /// `sink`, when the blob is absent or kept uncompressed (written before `compression: zstd`).
  /// With `verify_reads` the frame is first decoded and hashed (a second pass over the file,
  /// from the page cache), so a damaged blob is never sent.
  public func readCompressed(
    _ digest: BlobDigest, into sink: (ArraySlice<UInt8>) async throws -> Void
  ) async throws -> Bool {
    guard index.withLock({ $0.get(digest, now: StoreClock.now()) }) == .zstd else { return false }
    let path = self.path(digest, .zstd)
    let fd: Int32
    do {
      fd = try await pool.runIfActive { try FileCalls.open(path, O_RDONLY) }
    } catch let e as SystemCallError where e.isNotFound {
      index.withLock { idx in if idx.peek(digest) == .zstd { idx.remove(digest) } }
      return false
    } catch {
      throw failure(error, doing: "read a blob", path: path)
    }
    defer { close(fd) }
    guard let trailer = try await zstdTrailer(fd, path: path) else {
      throw await damaged(digest, .zstd, "has no valid length and checksum trailer")
    }
    if options.verifyReads {
      let (stored, content) = (trailer.storedLength, trailer.contentLength)
      let decoded = try await pool.runIfActive {
        Self.decodeStored(fd, storedLength: stored, contentLength: content)
      }
      switch decoded {
      case .success(let hash) where hash == trailer.sha256: break
      case .success: throw await damaged(digest, .zstd, "does not hash to its checksum")
      case .failure(let problem): throw await damaged(digest, .zstd, problem.message)
      }
    }
    var at: Int64 = 0
    while at < trailer.storedLength {
      let chunk = try await frameChunk(digest, fd: fd, path: path, at: at, storedLength: trailer.storedLength)
      try await sink(chunk[...])
      at += Int64(chunk.count)
    }
    return true
  }
}
