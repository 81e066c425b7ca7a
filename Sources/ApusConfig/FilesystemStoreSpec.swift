/// `filesystem`: files under `path` (created if missing; `~` expands to `$HOME`).
///
/// Keys, defaults and their meaning live here and nowhere else:
/// - `path` (required): the store root.
/// - `max_bytes`: LRU eviction keeps the files' total at or under this; absent: no limit.
/// - `min_free_bytes` (0): before a write, if the filesystem would have less free space than
///   this after it, least recently used entries are evicted first.
/// - `sync` (`data`): `none` never fsyncs; `data` fsyncs each file before its rename and the
///   directory after it (concurrent directory fsyncs are batched); `full` also fsyncs the
///   directory after every unlink (eviction, quarantine).
/// - `content` (`auto`): how entries are laid out, see `Content`.
/// - `verify_on_start` (false): hash every file found at start, in the background.
/// - `verify_reads` (false): hash every file as it is read.
/// - `compression` (`none`) and `compression_level` (3): see `StoreCompression`; with
///   `zstd` each blob is a `<hash>-<size>.zst` file (a zstd frame and a trailer with the
///   content's length and SHA-256), and `max_bytes` counts the compressed files.
public struct FilesystemStoreSpec: Sendable, Equatable, Decodable {
  /// When data reaches the disk, traded against write throughput.
  public enum Sync: String, Sendable, Equatable, CaseIterable {
    case none, data, full
  }

  /// What the keys of the store are, which decides whether a file can be checked by its name.
  public enum Content: String, Sendable, Equatable, CaseIterable {
    /// A value whose length equals its key's size is stored as is (CAS layout); any other
    /// value gets a length + SHA-256 trailer. Right for a CAS, an action cache, or both.
    case auto
    /// Content-addressed blobs only: a value whose length differs from its key's size is
    /// refused.
    case cas
    /// Every value gets the length + SHA-256 trailer (action cache: the key is the action).
    case actionCache = "action_cache"
  }

  public var path: String
  public var maxBytes: Int64?
  public var minFreeBytes: Int64
  public var sync: Sync
  public var content: Content
  public var verifyOnStart: Bool
  public var verifyReads: Bool
  public var compression: StoreCompression

  public init(
    path: String, maxBytes: Int64? = nil, minFreeBytes: Int64 = 0, sync: Sync = .data,
    content: Content = .auto, verifyOnStart: Bool = false, verifyReads: Bool = false,
    compression: StoreCompression = .none
  ) {
    self.path = path
    self.maxBytes = maxBytes
    self.minFreeBytes = minFreeBytes
    self.sync = sync
    self.content = content
    self.verifyOnStart = verifyOnStart
    self.verifyReads = verifyReads
    self.compression = compression
  }

  public init(from decoder: any Decoder) throws {
    let o = try ConfigObject(
      decoder,
      allowedKeys: Set([
        "path", "max_bytes", "min_free_bytes", "sync", "content", "verify_on_start", "verify_reads",
      ]).union(StoreCompression.keys))
    path = try o.requiredString("path")
    guard !path.isEmpty else { throw o.error("path", "must not be empty") }
    maxBytes = try o.integer("max_bytes")
    minFreeBytes = try o.integer("min_free_bytes", positive: false) ?? 0
    sync = try o.choice("sync") ?? .data
    content = try o.choice("content") ?? .auto
    verifyOnStart = try o.bool("verify_on_start") ?? false
    verifyReads = try o.bool("verify_reads") ?? false
    compression = try StoreCompression(o)
  }
}
