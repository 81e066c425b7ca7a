/// `existence_cache`: remembers positive `has` answers of a slow `backend`, so repeated
/// FindMissingBlobs calls do not ask it again.
public struct ExistenceCacheStoreSpec: Sendable, Equatable, Decodable {
  /// The store whose answers are cached. Required.
  public var backend: StoreSpec
  /// How long an answer is trusted (key `max_seconds`, default 600).
  public var maxSeconds: Int64
  /// How many answers are kept (key `max_count`, default 1,000,000).
  public var maxCount: Int64

  public init(backend: StoreSpec, maxSeconds: Int64 = 600, maxCount: Int64 = 1_000_000) {
    self.backend = backend
    self.maxSeconds = maxSeconds
    self.maxCount = maxCount
  }

  public init(from decoder: any Decoder) throws {
    let o = try ConfigObject(decoder, allowedKeys: ["backend", "max_seconds", "max_count"])
    backend = try o.requiredStore("backend")
    maxSeconds = try o.integer("max_seconds") ?? 600
    maxCount = try o.integer("max_count") ?? 1_000_000
  }
}
