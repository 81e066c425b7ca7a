import ApusProto
import NIOPosix
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// The write-behind queue's list of blobs on disk: `queue.journal` in its directory, one line
/// per change (`+<hash>-<size>` queued, `-<hash>-<size>` copied).
///
/// An addition is fsynced before it returns (the upload is acknowledged after it), with
/// group commit: appends made while a round is on disk share the next round's one fsync.
/// Removals are written but not waited for: losing one in a crash only copies a blob twice.
/// When most lines are stale the file is rewritten with only the live entries.
final class WriteBehindJournal: Sendable {
  private struct State {
    var fd: Int32
    var pending: [UInt8] = []
    var pendingAdds = false
    var running = false
    var waiters: [CheckedContinuation<Bool, any Error>] = []
    var live: Set<BlobDigest>
    var lines: Int
  }

  let path: String
  let directory: String
  private let state: Mutex<State>
  private let pool: NIOThreadPool

  private init(directory: String, fd: Int32, live: Set<BlobDigest>, pool: NIOThreadPool) {
    self.directory = directory
    path = directory + "/queue.journal"
    self.pool = pool
    state = Mutex(State(fd: fd, live: live, lines: live.count))
  }

  deinit { state.withLock { _ = close($0.fd) } }

  /// Opens (creating) the journal in `directory` and returns it with the blobs it lists;
  /// the file is rewritten to just those.
  static func open(directory: String, pool: NIOThreadPool = FsyncThreads.pool) async throws -> (
    WriteBehindJournal, [BlobDigest], torn: Int
  ) {
    let (fd, live, torn) = try await pool.runIfActive { () throws -> (Int32, [BlobDigest], Int) in
      if let failed = POSIXPaths.makeDirectories(directory) {
        throw StoreError(.internal, "write-behind queue: cannot create \(failed): \(POSIXPaths.errorText)")
      }
      let path = directory + "/queue.journal"
      var live: [BlobDigest: Int] = [:]
      var torn = 0
      if let fd = try? FileCalls.open(path, O_RDONLY) {
        defer { close(fd) }
        let size = try FileCalls.size(fd)
        let bytes = try FileCalls.read(fd, count: Int(size), at: 0)
        for (n, line) in bytes.split(separator: UInt8(ascii: "\n")).enumerated() {
          guard let op = line.first, let digest = parse(line.dropFirst()) else {
            torn += 1
            continue
          }
          if op == UInt8(ascii: "+") { live[digest] = live[digest] ?? n } else { live[digest] = nil }
        }
      }
      let ordered = live.sorted { $0.value < $1.value }.map(\.key)
      let fd = try rewrite(directory: directory, ordered)
      return (fd, ordered, torn)
    }
    return (WriteBehindJournal(directory: directory, fd: fd, live: Set(live), pool: pool), live, torn)
  }

  /// Records `digest` as queued; durable when this returns.
  func added(_ digest: BlobDigest) async throws {
    try await append("+", digest, durable: true)
  }

  /// Records `digest` as copied.
  func removed(_ digest: BlobDigest) async throws {
    try await append("-", digest, durable: false)
  }

  private func append(_ op: Character, _ digest: BlobDigest, durable: Bool) async throws {
    let line = Array("\(op)\(digest.hashHex)-\(digest.sizeBytes)\n".utf8)
    let lead = try await withCheckedThrowingContinuation { (c: CheckedContinuation<Bool, any Error>) in
      state.withLock { s in
        s.pending += line
        s.pendingAdds = s.pendingAdds || durable
        if op == "+" { s.live.insert(digest) } else { s.live.remove(digest) }
        s.lines += 1
        if s.running {
          s.waiters.append(c)
        } else {
          s.running = true
          c.resume(returning: true)
        }
      }
    }
    guard lead else { return }
    // Lead rounds until nobody is waiting: each writes what was appended until it began.
    while true {
      let (fd, bytes, sync, waiters, compact) = state.withLock { s in
        defer {
          s.pending = []
          s.pendingAdds = false
          s.waiters = []
        }
        let compact = s.lines > 10_000 && s.lines > 4 * s.live.count ? Array(s.live) : nil
        if compact != nil { s.lines = s.live.count }
        return (s.fd, s.pending, s.pendingAdds, s.waiters, compact)
      }
      let result: Result<Int32?, any Error>
      do {
        result = .success(
          try await pool.runIfActive { [directory] () throws -> Int32? in
            if let compact {
              // The live set already includes everything in `bytes`.
              return try Self.rewrite(directory: directory, compact)
            }
            let (_, error) = FileCalls.write(fd, bytes[...])
            if error != 0 { throw SystemCallError("write", error) }
            if sync { try FileCalls.syncData(fd) }
            return nil
          })
      } catch {
        result = .failure(error)
      }
      let more = state.withLock { s in
        if case .success(let newFD?) = result {
          close(s.fd)
          s.fd = newFD
        }
        if s.waiters.isEmpty && s.pending.isEmpty { s.running = false }
        return s.running
      }
      for w in waiters { w.resume(with: result.map { _ in false }) }
      guard more else { return try result.map { _ in () }.get() }
      _ = try? result.get()
    }
  }

  /// Writes `entries` to a new journal, fsyncs it and renames it into place; returns the new
  /// file opened for appending.
  private static func rewrite(directory: String, _ entries: [BlobDigest]) throws -> Int32 {
    let path = directory + "/queue.journal", temp = path + ".tmp"
    var bytes: [UInt8] = []
    bytes.reserveCapacity(entries.count * 80)
    for d in entries { bytes += Array("+\(d.hashHex)-\(d.sizeBytes)\n".utf8) }
    let fd = try FileCalls.open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0o600)
    do {
      let (_, error) = FileCalls.write(fd, bytes[...])
      if error != 0 { throw SystemCallError("write", error) }
      try FileCalls.syncData(fd)
      try FileCalls.rename(temp, path)
      try FileCalls.syncDirectory(directory)
    } catch {
      close(fd)
      throw error
    }
    return fd
  }

  /// `<64 hex>-<size>` → digest.
  static func parse(_ text: some Collection<UInt8>) -> BlobDigest? {
    guard let dash = text.firstIndex(of: UInt8(ascii: "-")),
      let size = Int64(String(decoding: text[text.index(after: dash)...], as: UTF8.self)), size >= 0
    else { return nil }
    return BlobDigest(hash: String(decoding: text[..<dash], as: UTF8.self), sizeBytes: size)
  }
}
