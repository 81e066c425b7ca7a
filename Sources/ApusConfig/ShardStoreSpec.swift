/// `shard`: blobs spread over several stores by digest, in proportion to their weights.
public struct ShardStoreSpec: Sendable, Equatable, Decodable {
  /// Key `stores`: `[{store: …, weight: 1}, …]`, at least one.
  public var stores: [ShardSpec]

  public init(stores: [ShardSpec]) {
    self.stores = stores
  }

  public init(from decoder: any Decoder) throws {
    let o = try ConfigObject(decoder, allowedKeys: ["stores"])
    guard let entries = try o.decode([ShardSpec].self, "stores"), !entries.isEmpty else {
      throw o.error("stores", "at least one shard is required")
    }
    stores = entries
  }
}

/// One shard of a `shard` store.
public struct ShardSpec: Sendable, Equatable, Decodable {
  /// The shard's store. Required.
  public var store: StoreSpec
  /// Its share of the digest space (key `weight`, default 1).
  public var weight: UInt32

  public init(store: StoreSpec, weight: UInt32 = 1) {
    self.store = store
    self.weight = weight
  }

  public init(from decoder: any Decoder) throws {
    let o = try ConfigObject(decoder, allowedKeys: ["store", "weight"])
    store = try o.requiredStore("store")
    weight = UInt32(clamping: try o.integer("weight") ?? 1)
  }
}
