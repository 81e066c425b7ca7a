/// `fast_slow`: a fast tier (memory, local disk) in front of a slow one (remote, S3).
public struct FastSlowStoreSpec: Sendable, Equatable, Decodable {
  /// Asked first on reads. Required.
  public var fast: StoreSpec
  /// The tier of record. Required.
  public var slow: StoreSpec
  /// Copy blobs read from `slow` into `fast` (key `fill_fast_on_read`, default true).
  public var fillFastOnRead: Bool
  /// Write uploads to both tiers, not only `slow` (key `write_fast`, default true).
  public var writeFast: Bool

  public init(fast: StoreSpec, slow: StoreSpec, fillFastOnRead: Bool = true, writeFast: Bool = true) {
    self.fast = fast
    self.slow = slow
    self.fillFastOnRead = fillFastOnRead
    self.writeFast = writeFast
  }

  public init(from decoder: any Decoder) throws {
    let o = try ConfigObject(decoder, allowedKeys: ["fast", "slow", "fill_fast_on_read", "write_fast"])
    fast = try o.requiredStore("fast")
    slow = try o.requiredStore("slow")
    fillFastOnRead = try o.bool("fill_fast_on_read") ?? true
    writeFast = try o.bool("write_fast") ?? true
  }
}
