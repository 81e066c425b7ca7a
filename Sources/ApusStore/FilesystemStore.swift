import ApusProto
import NIOPosix
import Synchronization

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Content in files under a root directory: `content/ab/<hash>-<size>`.
///
/// Writes go to `tmp/` and are renamed into place when complete, so a reader never sees a
/// partial file and a crash leaves only temp files (removed at the next start). On start
/// the index is rebuilt from the files present, oldest first; LRU eviction by `maxBytes`
/// unlinks files. Blocking file I/O runs on a thread pool, never on an event loop.
public final class FilesystemStore: BlobStore {
  public let root: String
  private let maxBytes: Int64?
  private let fileMode: mode_t
  private let pool: NIOThreadPool
  private let index = Mutex(LRUIndex<BlobDigest, Void>())
  private let tempCounter = Atomic<UInt64>(0)
  private let tempPrefix = String(UInt64.random(in: 0...UInt64.max), radix: 16)

  static let writeBufferBytes = 64 * 1024
  static let readChunkBytes = 256 * 1024

  private init(root: String, maxBytes: Int64?, fileMode: mode_t, pool: NIOThreadPool) {
    self.root = root
    self.maxBytes = maxBytes
    self.fileMode = fileMode
    self.pool = pool
  }

  /// Opens (creating if needed) the store at `root` and indexes what is already there.
  /// A worker's input cache uses `fileMode` 0o444, so hard-linked inputs are read-only.
  public static func open(
    root: String, maxBytes: Int64?, fileMode: mode_t = 0o644, pool: NIOThreadPool = .singleton
  ) async throws -> FilesystemStore {
    let store = FilesystemStore(root: root, maxBytes: maxBytes, fileMode: fileMode, pool: pool)
    let entries = try await pool.runIfActive { try store.scan() }
    let evicted = store.index.withLock { idx in
      for (digest, size) in entries { idx.set(digest, (), size: size, now: StoreClock.now()) }
      return idx.evict(maxBytes: maxBytes, maxCount: nil, maxAge: nil, now: StoreClock.now())
    }
    try await store.unlinkEvicted(evicted.map(\.0))
    return store
  }

  public var totalBytes: Int64 { index.withLock { $0.totalBytes } }
  public var count: Int { index.withLock { $0.count } }

  /// Where the content of `d` lives (while it is in the store).
  public func path(_ d: BlobDigest) -> String {
    let hex = d.hashHex
    return "\(root)/content/\(hex.prefix(2))/\(hex)-\(d.sizeBytes)"
  }

  /// Creates the layout, clears temp files, and lists content sorted oldest first.
  private func scan() throws -> [(BlobDigest, Int64)] {
    try makeDirectories(root)
    for dir in ["\(root)/content", "\(root)/tmp"] { try makeDirectory(dir) }
    for name in try listDirectory("\(root)/tmp") { unlink("\(root)/tmp/\(name)") }
    var found: [(BlobDigest, Int64, Int)] = []
    let hex = Array("0123456789abcdef")
    for a in hex {
      for b in hex {
        let dir = "\(root)/content/\(a)\(b)"
        try makeDirectory(dir)
        try Self.scanContentDirectory(dir, into: &found)
      }
    }
    found.sort { $0.2 < $1.2 }
    return found.map { ($0.0, $0.1) }
  }

  /// Appends (digest, size, mtime) for each `<hash>-<size>` file in `dir`. A million files
  /// take seconds, so names are parsed as bytes and `fstatat` resolves them relative to the
  /// open directory instead of walking a full path each time.
  private static func scanContentDirectory(
    _ dir: String, into found: inout [(BlobDigest, Int64, Int)]
  ) throws {
    guard let handle = opendir(dir) else {
      throw StoreError(.internal, "opendir \(dir): \(POSIXPaths.errorText)")
    }
    defer { closedir(handle) }
    let fd = dirfd(handle)
    while let entry = readdir(handle) {
      withUnsafeBytes(of: &entry.pointee.d_name) { raw in
        let name = raw.bindMemory(to: UInt8.self)
        // `<64 hex>-<decimal size>\0`
        guard name.count > 66, name[64] == UInt8(ascii: "-"), let base = name.baseAddress else {
          return
        }
        var size: Int64 = 0
        var i = 65
        while i < name.count, name[i] != 0 {
          let digit = name[i] &- UInt8(ascii: "0")
          guard digit < 10, size < Int64.max / 10 else { return }
          size = size * 10 + Int64(digit)
          i += 1
        }
        guard i > 65, i < name.count,
          let digest = BlobDigest(
            hashUTF8: UnsafeBufferPointer(start: base, count: 64), sizeBytes: size)
        else { return }
        var st = stat()
        let ok = base.withMemoryRebound(to: CChar.self, capacity: i + 1) {
          fstatat(fd, $0, &st, 0) == 0
        }
        guard ok else { return }
        found.append((digest, Int64(st.st_size), st.st_mtim.tv_sec))
      }
    }
  }

  public func findMissing(_ digests: [BlobDigest]) async throws -> [BlobDigest] {
    let now = StoreClock.now()
    return index.withLock { idx in digests.filter { idx.get($0, now: now) == nil } }
  }

  public func read(
    _ digest: BlobDigest, offset: Int64, limit: Int64?,
    into sink: (ArraySlice<UInt8>) async throws -> Void
  ) async throws -> Bool {
    guard index.withLock({ $0.get(digest, now: StoreClock.now()) != nil }) else { return false }
    let path = self.path(digest)
    let fd = try await pool.runIfActive { Glibc.open(path, O_RDONLY | O_CLOEXEC) }
    guard fd >= 0 else {
      if errno == ENOENT {
        index.withLock { _ = $0.remove(digest) }
        return false
      }
      throw StoreError(.internal, "open \(path): \(String(cString: strerror(errno)))")
    }
    defer { close(fd) }
    var position = max(offset, 0)
    var remaining = limit ?? Int64.max
    while remaining > 0 {
      let want = Int(min(Int64(Self.readChunkBytes), remaining))
      let at = position
      let chunk = try await pool.runIfActive { () throws -> [UInt8] in
        var buffer = [UInt8](repeating: 0, count: want)
        let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, want, off_t(at)) }
        guard n >= 0 else {
          throw StoreError(.internal, "read \(path): \(String(cString: strerror(errno)))")
        }
        buffer.removeLast(want - n)
        return buffer
      }
      if chunk.isEmpty { break }
      try await sink(chunk[...])
      position += Int64(chunk.count)
      remaining -= Int64(chunk.count)
    }
    return true
  }

  public func write<Chunks: AsyncSequence<[UInt8], any Error>>(
    _ digest: BlobDigest, from chunks: Chunks
  ) async throws {
    try await write(digest) { sink in
      for try await chunk in chunks { try await sink(chunk[...]) }
    }
  }

  /// Stores what `producer` passes to its sink, e.g. straight from a remote read. Nothing is
  /// visible under `digest` unless `producer` returns normally.
  public func write(
    _ digest: BlobDigest, producer: ((ArraySlice<UInt8>) async throws -> Void) async throws -> Void
  ) async throws {
    let n = tempCounter.wrappingAdd(1, ordering: .relaxed).newValue
    let temp = "\(root)/tmp/\(tempPrefix)-\(n)"
    let mode = fileMode
    let fd = try await pool.runIfActive {
      Glibc.open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
    }
    guard fd >= 0 else {
      throw StoreError(.internal, "create \(temp): \(String(cString: strerror(errno)))")
    }
    var written: Int64 = 0
    do {
      var pending: [UInt8] = []
      try await producer { chunk in
        // Large chunks go straight to the file; small ones are gathered into one write. An
        // upload holds at most one chunk plus 64 KiB here, however many are in flight.
        if pending.isEmpty && chunk.count >= Self.writeBufferBytes {
          try await self.writeFully(fd, chunk, path: temp)
          written += Int64(chunk.count)
          return
        }
        pending.append(contentsOf: chunk)
        if pending.count >= Self.writeBufferBytes {
          try await self.writeFully(fd, pending[...], path: temp)
          written += Int64(pending.count)
          pending.removeAll(keepingCapacity: true)
        }
      }
      if !pending.isEmpty {
        try await writeFully(fd, pending[...], path: temp)
        written += Int64(pending.count)
      }
      let final = path(digest)
      try await pool.runIfActive {
        fchmod(fd, mode)
        close(fd)
        guard rename(temp, final) == 0 else {
          throw StoreError(.internal, "rename to \(final): \(String(cString: strerror(errno)))")
        }
      }
    } catch {
      close(fd)
      unlink(temp)
      throw error
    }
    let now = StoreClock.now()
    let maxBytes = self.maxBytes
    let evicted = index.withLock { idx in
      idx.set(digest, (), size: written, now: now)
      return idx.evict(maxBytes: maxBytes, maxCount: nil, maxAge: nil, now: now)
    }
    try await unlinkEvicted(evicted.map(\.0))
  }

  private func writeFully(_ fd: Int32, _ bytes: ArraySlice<UInt8>, path: String) async throws {
    try await pool.runIfActive {
      try bytes.withUnsafeBytes { raw in
        var done = 0
        while done < raw.count {
          let n = Glibc.write(fd, raw.baseAddress! + done, raw.count - done)
          if n < 0 {
            if errno == EINTR { continue }
            let code: StoreError.Code = errno == ENOSPC ? .resourceExhausted : .internal
            throw StoreError(code, "write \(path): \(String(cString: strerror(errno)))")
          }
          done += n
        }
      }
    }
  }

  private func unlinkEvicted(_ digests: [BlobDigest]) async throws {
    guard !digests.isEmpty else { return }
    let paths = digests.map(path)
    try await pool.runIfActive { for p in paths { unlink(p) } }
  }
}

private func makeDirectory(_ path: String) throws {
  if mkdir(path, 0o755) != 0 && errno != EEXIST {
    throw StoreError(.internal, "mkdir \(path): \(String(cString: strerror(errno)))")
  }
}

/// `mkdir -p`.
private func makeDirectories(_ path: String) throws {
  if let failed = POSIXPaths.makeDirectories(path) {
    throw StoreError(.internal, "mkdir \(failed): \(POSIXPaths.errorText)")
  }
}

private func listDirectory(_ path: String) throws -> [String] {
  guard let names = POSIXPaths.list(path) else {
    throw StoreError(.internal, "opendir \(path): \(POSIXPaths.errorText)")
  }
  return names
}
