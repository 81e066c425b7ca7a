/// `fast_slow`: a fast tier (memory, local disk) in front of a slow one (remote, S3).
public struct FastSlowStoreSpec: Sendable, Equatable, Decodable {
  /// When an upload is acknowledged.
  public enum SlowWrite: String, Sendable, Equatable, CaseIterable {
    /// Once both tiers have it. While the slow tier is down, uploads fail (fast, once its
    /// circuit breaker is open), and a blob the slow tier refused is not kept in the fast one.
    case sync
    /// Once the fast tier has it on disk; the write-behind queue copies it to the slow tier
    /// (retrying until it is accepted, also after a restart). Needs a durable fast tier.
    case async
  }

  /// Asked first on reads. Required.
  public var fast: StoreSpec
  /// The tier of record. Required.
  public var slow: StoreSpec
  /// Copy blobs read from `slow` into `fast` (key `fill_fast_on_read`, default true).
  public var fillFastOnRead: Bool
  /// Write uploads to both tiers, not only `slow` (key `write_fast`, default true).
  public var writeFast: Bool
  /// Key `slow_write`, default `sync`.
  public var slowWrite: SlowWrite
  /// The queue of `async` (key `write_behind`, required with it, refused without).
  public var writeBehind: WriteBehindConfig?

  public init(
    fast: StoreSpec, slow: StoreSpec, fillFastOnRead: Bool = true, writeFast: Bool = true,
    slowWrite: SlowWrite = .sync, writeBehind: WriteBehindConfig? = nil
  ) {
    self.fast = fast
    self.slow = slow
    self.fillFastOnRead = fillFastOnRead
    self.writeFast = writeFast
    self.slowWrite = slowWrite
    self.writeBehind = writeBehind
  }

  public init(from decoder: any Decoder) throws {
    let o = try ConfigObject(
      decoder, allowedKeys: ["fast", "slow", "fill_fast_on_read", "write_fast", "slow_write", "write_behind"])
    fast = try o.requiredStore("fast")
    slow = try o.requiredStore("slow")
    fillFastOnRead = try o.bool("fill_fast_on_read") ?? true
    writeFast = try o.bool("write_fast") ?? true
    slowWrite = try o.choice("slow_write") ?? .sync
    writeBehind = try o.decode(WriteBehindConfig.self, "write_behind")
    switch slowWrite {
    case .async where writeBehind == nil:
      throw o.error("write_behind", "is required with slow_write async (at least its \"path\")")
    case .async where !writeFast:
      throw o.error("write_fast", "must be true with slow_write async: the fast tier holds what is queued")
    case .sync where writeBehind != nil:
      throw o.error("write_behind", "is only used with slow_write async")
    default:
      break
    }
  }
}

/// `fast_slow.write_behind`: the queue of an `async` fast_slow store.
///
/// - `path` (required): a directory for the queue's journal, which lists the blobs not yet
///   in the slow tier, so they are copied after a restart. Not shared between processes.
/// - `max_bytes` (10 GiB) and `max_entries` (1,000,000): beyond either, uploads fail with
///   RESOURCE_EXHAUSTED until the queue drains. Queued blobs are pinned in the fast tier,
///   so keep `max_bytes` well below the fast tier's `max_bytes`. Sizes are the digests'
///   sizes (for an action cache, the action's, as values are small).
/// - `concurrency` (8): copies in flight at once.
public struct WriteBehindConfig: Sendable, Equatable, Decodable {
  public var path: String
  public var maxBytes: Int64 = 10 << 30
  public var maxEntries: Int = 1_000_000
  public var concurrency: Int = 8

  public init(path: String) { self.path = path }

  public init(from decoder: any Decoder) throws {
    let o = try ConfigObject(decoder, allowedKeys: ["path", "max_bytes", "max_entries", "concurrency"])
    path = try o.requiredString("path")
    guard !path.isEmpty else { throw o.error("path", "must not be empty") }
    let d = Self(path: path)
    maxBytes = try o.integer("max_bytes") ?? d.maxBytes
    maxEntries = Int(try o.integer("max_entries") ?? Int64(d.maxEntries))
    concurrency = Int(try o.integer("concurrency") ?? Int64(d.concurrency))
    guard concurrency <= 1024 else { throw o.error("concurrency", "expected at most 1024, got \(concurrency)") }
  }
}
