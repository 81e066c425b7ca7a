import ApusConfig
import ApusProto
import CoreMetrics
import Logging
import NIOPosix
import Synchronization

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Content in files under a root directory: `content/ab/<hash>-<size>[.sealed|.zst]`.
///
/// Writes go to `tmp/` and are renamed into place when complete (fsynced first, by the
/// `sync` policy), so a reader never sees a partial file and a crash leaves only temp files
/// (removed at the next start). On start the index is rebuilt from the files present, oldest
/// first; a file that cannot be whole is moved to `quarantine/`. LRU eviction by `maxBytes`,
/// by the free-space headroom and on ENOSPC unlinks files. Blocking file I/O runs on a thread
/// pool, never on an event loop. Errors name the store, never a path: paths go to the log.
public final class FilesystemStore: BlobStore {
  /// Everything but the root and the byte limit, with the config's defaults.
  public struct Options: Sendable, Equatable {
    public var minFreeBytes: Int64
    public var sync: FilesystemStoreSpec.Sync
    public var content: FilesystemStoreSpec.Content
    public var verifyOnStart: Bool
    public var verifyReads: Bool
    /// How new blobs are written; what is already stored is read either way.
    public var compression: StoreCompression

    public init(
      minFreeBytes: Int64 = 0, sync: FilesystemStoreSpec.Sync = .data,
      content: FilesystemStoreSpec.Content = .auto, verifyOnStart: Bool = false,
      verifyReads: Bool = false, compression: StoreCompression = .none
    ) {
      self.minFreeBytes = minFreeBytes
      self.sync = sync
      self.content = content
      self.verifyOnStart = verifyOnStart
      self.verifyReads = verifyReads
      self.compression = compression
    }

    public init(_ spec: FilesystemStoreSpec) {
      self.init(
        minFreeBytes: spec.minFreeBytes, sync: spec.sync, content: spec.content,
        verifyOnStart: spec.verifyOnStart, verifyReads: spec.verifyReads,
        compression: spec.compression)
    }
  }

  public let root: String
  /// The store's name in error messages and logs (the config's store name).
  public let name: String
  let maxBytes: Int64?
  let options: Options
  let fileMode: mode_t
  let pool: NIOThreadPool
  let logger: Logger
  /// Counts what `maxBytes`, the headroom and ENOSPC evict (the named store's
  /// `apus_store_evictions_total`).
  let evictions: Counter?
  let index = Mutex(LRUIndex<BlobDigest, EntryLayout>())
  /// Entries eviction must skip, with how many holders each has (the write-behind queue
  /// pins what it has yet to copy to a slow tier). Taken inside `index`'s lock, never around it.
  let pins = Mutex<[BlobDigest: Int]>([:])
  let directorySyncer: DirectorySyncer
  /// What the start scan found, kept for `verifyContents` only when `verifyOnStart` is set.
  let foundAtStart = Mutex<[(BlobDigest, EntryLayout)]>([])
  let tempCounter = Atomic<UInt64>(0)
  let tempPrefix = String(UInt64.random(in: 0...UInt64.max), radix: 16)

  static let writeBufferBytes = 64 * 1024
  static let readChunkBytes = 256 * 1024
  /// Freed beyond a write's own size when making room, so the next writes do not each
  /// have to evict again.
  static let roomSlackBytes: Int64 = 1 << 20

  private init(
    root: String, name: String, maxBytes: Int64?, options: Options, fileMode: mode_t,
    pool: NIOThreadPool, logger: Logger, evictions: Counter?
  ) {
    self.root = root
    self.name = name
    self.maxBytes = maxBytes
    self.options = options
    self.fileMode = fileMode
    self.pool = pool
    self.logger = logger
    self.evictions = evictions
    self.directorySyncer = DirectorySyncer()
  }

  /// Opens (creating if needed) the store at `root` and indexes what is already there.
  /// A worker's input cache uses `fileMode` 0o444, so hard-linked inputs are read-only.
  /// `name` is what client-facing errors call the store. With `options.verifyOnStart`, the
  /// owner should run `verifyContents()` in the background once the store is serving.
  public static func open(
    root: String, maxBytes: Int64?, name: String = "filesystem", options: Options = .init(),
    fileMode: mode_t = 0o644, pool: NIOThreadPool = .singleton,
    logger: Logger = Logger(label: "apus.store.filesystem"), evictions: Counter? = nil
  ) async throws -> FilesystemStore {
    let store = FilesystemStore(
      root: root, name: name, maxBytes: maxBytes, options: options, fileMode: fileMode, pool: pool,
      logger: logger, evictions: evictions)
    let scan = try await pool.runIfActive { try ContentScan.run(root: root) }
    store.logQuarantined(scan.quarantined, reason: "size or trailer does not match the name")
    let evicted = store.index.withLock { idx in
      for entry in scan.entries {
        idx.set(entry.digest, entry.layout, size: entry.fileSize, now: StoreClock.now())
      }
      return idx.evict(maxBytes: maxBytes, maxCount: nil, maxAge: nil, now: StoreClock.now())
    }
    if options.verifyOnStart {
      store.foundAtStart.withLock { $0 = scan.entries.map { ($0.digest, $0.layout) } }
    }
    store.countEvictions(evicted.count)
    try await store.unlinkEvicted(evicted)
    return store
  }

  public var totalBytes: Int64 { index.withLock { $0.totalBytes } }
  public var count: Int { index.withLock { $0.count } }
  /// Entries and bytes (file sizes) held, read under one lock.
  public var usage: StoreUsage { index.withLock { StoreUsage(entries: $0.count, bytes: $0.totalBytes) } }

  func countEvictions(_ n: Int) {
    if n > 0 { evictions?.increment(by: n) }
  }

  /// Where the content of `d` lives as a plain file (the CAS layout a worker hard-links).
  public func path(_ d: BlobDigest) -> String { path(d, .plain) }

  func path(_ d: BlobDigest, _ layout: EntryLayout) -> String {
    "\(directory(d))/\(Self.fileName(d, layout))"
  }

  func directory(_ d: BlobDigest) -> String { "\(root)/content/\(d.hashHex.prefix(2))" }

  static func fileName(_ d: BlobDigest, _ layout: EntryLayout) -> String {
    "\(d.hashHex)-\(d.sizeBytes)\(layout.suffix)"
  }

  public func findMissing(_ digests: [BlobDigest]) async throws -> [BlobDigest] {
    let now = StoreClock.now()
    return index.withLock { idx in digests.filter { idx.get($0, now: now) == nil } }
  }

  public func pin(_ digest: BlobDigest) { pins.withLock { $0[digest, default: 0] += 1 } }

  public func unpin(_ digest: BlobDigest) {
    pins.withLock { pins in
      guard let n = pins[digest] else { return }
      pins[digest] = n > 1 ? n - 1 : nil
    }
  }

  /// For `LRUIndex.evict`, called inside the index lock.
  func isPinned(_ digest: BlobDigest) -> Bool { pins.withLock { $0[digest] != nil } }

  // MARK: - Errors

  /// The client-facing error for a failed call; the path goes to the log only.
  func failure(_ error: any Error, doing what: String, path: String) -> StoreError {
    if let store = error as? StoreError { return store }
    guard let call = error as? SystemCallError else {
      return StoreError(.internal, "filesystem store \"\(name)\": cannot \(what): \(error)")
    }
    if call.isNoSpace { return noSpace() }
    logger.error(
      "filesystem store I/O failed",
      metadata: [
        "store": "\(name)", "call": "\(call.call)", "path": "\(path)", "error": "\(call.text)",
      ])
    return StoreError(.internal, "filesystem store \"\(name)\": cannot \(what): \(call.text)")
  }

  func noSpace() -> StoreError {
    StoreError(.resourceExhausted, "filesystem store \"\(name)\": no space left on device")
  }

  // MARK: - Removal

  /// Unlinks evicted entries' files (and, with `sync: full`, makes the unlinks durable).
  func unlinkEvicted(_ entries: [(BlobDigest, EntryLayout)]) async throws {
    guard !entries.isEmpty else { return }
    let paths = entries.map { path($0.0, $0.1) }
    try await pool.runIfActive { for p in paths { unlink(p) } }
    if options.sync == .full {
      for dir in Set(entries.map { directory($0.0) }) { try await directorySyncer.sync(dir) }
    }
  }

  func logQuarantined(_ paths: [String], reason: String) {
    guard !paths.isEmpty else { return }
    logger.warning(
      "filesystem store moved damaged files to quarantine",
      metadata: [
        "store": "\(name)", "count": "\(paths.count)", "reason": "\(reason)",
        "quarantine": "\(root)/quarantine", "files": "\(paths.prefix(20))",
      ])
  }
}
