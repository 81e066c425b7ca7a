import ApusProto

#if canImport(Glibc)
  import Glibc
#endif

extension FilesystemStore {
  public func write<Chunks: AsyncSequence<ArraySlice<UInt8>, any Error>>(
    _ digest: BlobDigest, from chunks: Chunks
  ) async throws {
    try await write(digest) { sink in
      for try await chunk in chunks { try await sink(chunk) }
    }
  }

  /// Stores what `producer` passes to its sink, e.g. straight from a remote read. Nothing is
  /// visible under `digest` unless `producer` returns normally.
  ///
  /// Out of space (ENOSPC, before or during the write) the least recently used entries are
  /// evicted to make room for the rest of the blob and the write continues where it stopped,
  /// once; a second failure is RESOURCE_EXHAUSTED naming the store.
  public func write(
    _ digest: BlobDigest, producer: ((ArraySlice<UInt8>) async throws -> Void) async throws -> Void
  ) async throws {
    if options.compression.algorithm == .zstd {
      return try await writeZstd(digest, producer: producer)
    }
    var mayEvict = true
    if options.minFreeBytes > 0 { try await keepHeadroom(for: digest.sizeBytes) }
    let temp = newTempPath()
    let fd = try await createTemp(temp, expected: digest.sizeBytes, mayEvict: &mayEvict)
    var written: Int64 = 0
    var isOpen = true
    do {
      var pending: [UInt8] = []
      try await producer { chunk in
        // Large chunks go straight to the file; small ones are gathered into one write. An
        // upload holds at most one chunk plus 64 KiB here, however many are in flight.
        if pending.isEmpty && chunk.count >= Self.writeBufferBytes {
          let rest = max(digest.sizeBytes - written, Int64(chunk.count))
          try await self.append(chunk, to: fd, temp: temp, rest: rest, mayEvict: &mayEvict)
          written += Int64(chunk.count)
          return
        }
        pending.append(contentsOf: chunk)
        if pending.count >= Self.writeBufferBytes {
          let rest = max(digest.sizeBytes - written, Int64(pending.count))
          try await self.append(pending[...], to: fd, temp: temp, rest: rest, mayEvict: &mayEvict)
          written += Int64(pending.count)
          pending.removeAll(keepingCapacity: true)
        }
      }
      if !pending.isEmpty {
        try await append(
          pending[...], to: fd, temp: temp, rest: Int64(pending.count), mayEvict: &mayEvict)
        written += Int64(pending.count)
      }
      let layout = try layout(for: digest, written: written)
      var fileSize = written
      if layout == .sealed {
        let trailer = try await trailer(of: fd, length: written, temp: temp)
        try await append(
          trailer[...], to: fd, temp: temp, rest: Int64(trailer.count), mayEvict: &mayEvict)
        fileSize += Int64(trailer.count)
      }
      try await commit(fd, temp: temp, digest: digest, layout: layout)
      close(fd)
      isOpen = false
      try await index(digest, layout, fileSize: fileSize)
    } catch {
      if isOpen { close(fd) }
      unlink(temp)
      throw error
    }
  }

  /// A fresh path under `tmp/` for a write in progress.
  func newTempPath() -> String {
    let n = tempCounter.wrappingAdd(1, ordering: .relaxed).newValue
    return "\(root)/tmp/\(tempPrefix)-\(n)"
  }

  /// How a value of `written` bytes under `digest` is laid out, by the `content` option.
  func layout(for digest: BlobDigest, written: Int64) throws -> EntryLayout {
    switch options.content {
    case .actionCache: return .sealed
    case .auto: return written == digest.sizeBytes ? .plain : .sealed
    case .cas:
      guard written == digest.sizeBytes else {
        throw StoreError(
          .invalidArgument,
          "filesystem store \"\(name)\": \(written) bytes for \(digest), whose size is "
            + "\(digest.sizeBytes) (an action cache needs content auto or action_cache)")
      }
      return .plain
    }
  }

  func createTemp(_ temp: String, expected: Int64, mayEvict: inout Bool) async throws
    -> Int32
  {
    while true {
      do {
        return try await pool.runIfActive {
          try FileCalls.open(temp, O_RDWR | O_CREAT | O_EXCL, 0o600)
        }
      } catch let e as SystemCallError where e.isNoSpace && mayEvict {
        mayEvict = false
        guard try await makeRoom(expected) else { throw noSpace() }
      } catch {
        throw failure(error, doing: "create a blob", path: temp)
      }
    }
  }

  /// Writes `bytes`; on ENOSPC makes room for `rest` (what the blob still needs) and goes on.
  func append(
    _ bytes: ArraySlice<UInt8>, to fd: Int32, temp: String, rest: Int64, mayEvict: inout Bool
  ) async throws {
    var remaining = bytes
    while true {
      let slice = remaining
      let (written, error) = try await pool.runIfActive { FileCalls.write(fd, slice) }
      if error == 0 { return }
      remaining = remaining.dropFirst(written)
      let call = SystemCallError("write", error)
      if call.isNoSpace, mayEvict {
        mayEvict = false
        if try await makeRoom(rest) { continue }
      }
      throw failure(call, doing: "write a blob", path: temp)
    }
  }

  /// The trailer of the `length` bytes written so far, hashed back from the file (values
  /// that need one are small, and the page cache still has them).
  private func trailer(of fd: Int32, length: Int64, temp: String) async throws -> [UInt8] {
    do {
      return try await pool.runIfActive {
        let hasher = SHA256Hasher()
        var at: Int64 = 0
        while at < length {
          let want = Int(min(Int64(Self.writeBufferBytes), length - at))
          let chunk = try FileCalls.read(fd, count: want, at: at)
          guard chunk.count == want else { throw SystemCallError("pread", EIO) }
          hasher.update(chunk)
          at += Int64(want)
        }
        return EntryTrailer(contentLength: length, sha256: hasher.finish()).bytes
      }
    } catch {
      throw failure(error, doing: "write a blob", path: temp)
    }
  }

  /// Makes the temp file durable (by `sync`), renames it into place, and makes the rename
  /// durable. The caller closes `fd`.
  func commit(_ fd: Int32, temp: String, digest: BlobDigest, layout: EntryLayout)
    async throws
  {
    let final = path(digest, layout)
    let mode = fileMode
    let syncData = options.sync != .none
    do {
      try await (syncData ? FsyncThreads.pool : pool).runIfActive {
        fchmod(fd, mode)
        if syncData { try FileCalls.syncData(fd) }
        try FileCalls.rename(temp, final)
      }
    } catch {
      throw failure(error, doing: "store a blob", path: final)
    }
    if syncData {
      do {
        try await directorySyncer.sync(directory(digest))
      } catch {
        throw failure(error, doing: "store a blob", path: directory(digest))
      }
    }
  }

  /// Indexes a committed entry, removes its file in the other layout if it had one, and
  /// evicts down to `maxBytes`.
  func index(_ digest: BlobDigest, _ layout: EntryLayout, fileSize: Int64) async throws {
    let now = StoreClock.now()
    let maxBytes = self.maxBytes
    let evicted = index.withLock { idx in
      let previous = idx.peek(digest)
      idx.set(digest, layout, size: fileSize, now: now)
      var out = idx.evict(maxBytes: maxBytes, maxCount: nil, maxAge: nil, now: now, pinned: isPinned)
      countEvictions(out.count)
      if let previous, previous != layout { out.append((digest, previous)) }
      return out
    }
    try await unlinkEvicted(evicted)
  }

  /// Evicts least recently used entries until the filesystem would keep `minFreeBytes`
  /// free after a write of `size` bytes (as far as evicting can).
  func keepHeadroom(for size: Int64) async throws {
    let available: Int64
    do {
      available = try await pool.runIfActive { [root] in try FileCalls.availableBytes(root) }
    } catch {
      throw failure(error, doing: "check free space", path: root)
    }
    let short = options.minFreeBytes + max(size, 0) - available
    if short > 0 { _ = try await makeRoom(short) }
  }

  /// Evicts least recently used entries holding at least `bytes` (plus some slack) and
  /// unlinks them; false if there was nothing to evict.
  func makeRoom(_ bytes: Int64) async throws -> Bool {
    let need = bytes + Self.roomSlackBytes
    let now = StoreClock.now()
    let evicted = index.withLock { idx in
      idx.evict(maxBytes: max(0, idx.totalBytes - need), maxCount: nil, maxAge: nil, now: now, pinned: isPinned)
    }
    guard !evicted.isEmpty else { return false }
    countEvictions(evicted.count)
    logger.notice(
      "filesystem store evicted entries to make room",
      metadata: ["store": "\(name)", "entries": "\(evicted.count)", "bytes_needed": "\(need)"])
    try await unlinkEvicted(evicted)
    return true
  }
}
