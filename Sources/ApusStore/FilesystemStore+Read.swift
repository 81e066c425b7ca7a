import ApusProto

#if canImport(Glibc)
  import Glibc
#endif

extension FilesystemStore {
  /// Streams at most the content's length, never what else a file holds. A file that does
  /// not match its name (size, trailer, or, when hashed, content) fails the read with
  /// DATA_LOSS and is quarantined. The last chunk is held back until any hash check passed,
  /// so a damaged blob is never delivered whole.
  public func read(
    _ digest: BlobDigest, offset: Int64, limit: Int64?,
    into sink: (ArraySlice<UInt8>) async throws -> Void
  ) async throws -> Bool {
    guard let layout = index.withLock({ $0.get(digest, now: StoreClock.now()) }) else {
      return false
    }
    let path = self.path(digest, layout)
    let fd: Int32
    do {
      fd = try await pool.runIfActive { try FileCalls.open(path, O_RDONLY) }
    } catch let e as SystemCallError where e.isNotFound {
      index.withLock { idx in if idx.peek(digest) == layout { idx.remove(digest) } }
      return false
    } catch {
      throw failure(error, doing: "read a blob", path: path)
    }
    defer { close(fd) }
    if layout == .zstd {
      return try await readZstd(digest, fd: fd, path: path, offset: offset, limit: limit, into: sink)
    }

    let (fileSize, tail): (Int64, [UInt8]?)
    do {
      (fileSize, tail) = try await pool.runIfActive { () throws -> (Int64, [UInt8]?) in
        let size = try FileCalls.size(fd)
        guard layout == .sealed, size >= EntryTrailer.byteCount else { return (size, nil) }
        let at = size - Int64(EntryTrailer.byteCount)
        return (size, try FileCalls.read(fd, count: EntryTrailer.byteCount, at: at))
      }
    } catch {
      throw failure(error, doing: "read a blob", path: path)
    }
    let length: Int64
    let expectedHash: [UInt8]?
    switch layout {
    case .plain:
      guard fileSize == digest.sizeBytes else {
        throw await damaged(digest, layout, "is \(fileSize) bytes on disk")
      }
      length = fileSize
      expectedHash = options.verifyReads ? digest.hashBytes : nil
    case .sealed, .zstd:  // .zstd entries went to readZstd above
      guard let trailer = tail.flatMap({ EntryTrailer($0, fileSize: fileSize) }) else {
        throw await damaged(digest, layout, "has no valid length and checksum trailer")
      }
      length = trailer.contentLength
      expectedHash = trailer.sha256
    }

    // The requested range [start, end) of the content.
    let start = min(max(offset, 0), length)
    let end = limit.map { $0 >= length - start ? length : start + max($0, 0) } ?? length
    let hasher = expectedHash.map { _ in SHA256Hasher() }
    var position = hasher == nil ? start : 0
    let stop = hasher == nil ? end : length
    var held: ArraySlice<UInt8>?
    while position < stop {
      let want = Int(min(Int64(Self.readChunkBytes), stop - position))
      let at = position
      let chunk: [UInt8]
      do {
        chunk = try await pool.runIfActive { try FileCalls.read(fd, count: want, at: at) }
      } catch {
        throw failure(error, doing: "read a blob", path: path)
      }
      guard chunk.count == want else {
        throw await damaged(digest, layout, "ends at \(at + Int64(chunk.count)) of \(length) bytes")
      }
      hasher?.update(chunk)
      let low = max(start, position)
      let high = min(end, position + Int64(want))
      if low < high {
        if let held { try await sink(held) }
        held = chunk[Int(low - position)..<Int(high - position)]
      }
      position += Int64(want)
    }
    if let hasher, let expectedHash, hasher.finish() != expectedHash {
      throw await damaged(digest, layout, "does not hash to its checksum")
    }
    if let held { try await sink(held) }
    return true
  }

  /// Drops a damaged entry from the index, moves its file to `quarantine/`, and returns
  /// the DATA_LOSS error for the reader.
  func damaged(_ digest: BlobDigest, _ layout: EntryLayout, _ problem: String) async -> StoreError {
    await quarantine(digest, layout, problem)
    return StoreError(
      .dataLoss,
      "filesystem store \"\(name)\": the stored copy of \(digest) \(problem); it was removed")
  }

  /// Moves an entry's file to `quarantine/` and forgets it.
  func quarantine(_ digest: BlobDigest, _ layout: EntryLayout, _ problem: String) async {
    index.withLock { idx in if idx.peek(digest) == layout { idx.remove(digest) } }
    let from = path(digest, layout)
    let to = "\(root)/quarantine/\(Self.fileName(digest, layout))"
    let moved = (try? await pool.runIfActive { try FileCalls.rename(from, to) }) != nil
    logQuarantined(moved ? [from] : [], reason: problem)
    if moved, options.sync == .full { try? await directorySyncer.sync(directory(digest)) }
  }
}
