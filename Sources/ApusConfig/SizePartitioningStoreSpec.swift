/// `size_partitioning`: small blobs to one store, large ones to another (e.g. small in
/// memory, large on disk).
public struct SizePartitioningStoreSpec: Sendable, Equatable, Decodable {
  /// Blobs smaller than this go to `lower` (key `threshold_bytes`). Required.
  public var thresholdBytes: Int64
  /// Blobs under the threshold. Required.
  public var lower: StoreSpec
  /// Blobs at or over the threshold. Required.
  public var upper: StoreSpec

  public init(thresholdBytes: Int64, lower: StoreSpec, upper: StoreSpec) {
    self.thresholdBytes = thresholdBytes
    self.lower = lower
    self.upper = upper
  }

  public init(from decoder: any Decoder) throws {
    let o = try ConfigObject(decoder, allowedKeys: ["threshold_bytes", "lower", "upper"])
    guard let threshold = try o.integer("threshold_bytes") else {
      throw o.error("threshold_bytes", "is required")
    }
    thresholdBytes = threshold
    lower = try o.requiredStore("lower")
    upper = try o.requiredStore("upper")
  }
}
