import ApusProto

#if canImport(Glibc)
  import Glibc
#endif

extension FilesystemStore {
  /// What `verifyContents` did.
  public struct VerifyReport: Sendable, Equatable {
    public var checked = 0
    public var quarantined = 0
  }

  /// With `verify_on_start`: hashes every file the start scan indexed, one at a time on the
  /// thread pool, quarantining and forgetting each that does not match its name or trailer.
  ///
  /// Not run by `open`, so start is not held up: the owner runs it in the background (a
  /// task-group child) once the store serves. Runs once; later calls, and calls without
  /// `verify_on_start`, return an empty report. Stops early when the task is cancelled.
  public func verifyContents() async -> VerifyReport {
    let entries = foundAtStart.withLock { found in
      defer { found = [] }
      return found
    }
    var report = VerifyReport()
    for (digest, layout) in entries {
      if Task.isCancelled { break }
      guard index.withLock({ $0.peek(digest) == layout }) else { continue }
      let path = self.path(digest, layout)
      let problem: String?
      do {
        problem = try await pool.runIfActive { Self.check(path, digest, layout) }
      } catch {
        break  // the pool is shutting down
      }
      report.checked += 1
      if let problem {
        await quarantine(digest, layout, problem)
        report.quarantined += 1
      }
    }
    if !entries.isEmpty {
      logger.info(
        "filesystem store verified its contents",
        metadata: [
          "store": "\(name)", "checked": "\(report.checked)",
          "quarantined": "\(report.quarantined)",
        ])
    }
    return report
  }

  /// What is wrong with the file at `path` for `digest`, or nil if it is whole (or gone).
  /// Blocking.
  static func check(_ path: String, _ digest: BlobDigest, _ layout: EntryLayout) -> String? {
    guard let fd = try? FileCalls.open(path, O_RDONLY) else { return nil }
    defer { close(fd) }
    guard let size = try? FileCalls.size(fd) else { return nil }
    var length = size
    var expected = digest.hashBytes
    switch layout {
    case .plain:
      guard size == digest.sizeBytes else { return "is \(size) bytes on disk" }
    case .zstd:
      let at = size - Int64(ZstdEntryTrailer.byteCount)
      guard at >= 0, let tail = try? FileCalls.read(fd, count: ZstdEntryTrailer.byteCount, at: at),
        let trailer = ZstdEntryTrailer(tail, fileSize: size)
      else { return "has no valid length and checksum trailer" }
      switch decodeStored(fd, storedLength: trailer.storedLength, contentLength: trailer.contentLength) {
      case .success(let hash): return hash == trailer.sha256 ? nil : "does not hash to its checksum"
      case .failure(let problem): return problem.message
      }
    case .sealed:
      let at = size - Int64(EntryTrailer.byteCount)
      guard at >= 0, let tail = try? FileCalls.read(fd, count: EntryTrailer.byteCount, at: at),
        let trailer = EntryTrailer(tail, fileSize: size)
      else { return "has no valid length and checksum trailer" }
      length = trailer.contentLength
      expected = trailer.sha256
    }
    let hasher = SHA256Hasher()
    var at: Int64 = 0
    while at < length {
      let want = Int(min(Int64(writeBufferBytes), length - at))
      guard let chunk = try? FileCalls.read(fd, count: want, at: at), chunk.count == want else {
        return "cannot be read back whole"
      }
      hasher.update(chunk)
      at += Int64(want)
    }
    return hasher.finish() == expected ? nil : "does not hash to its checksum"
  }
}
