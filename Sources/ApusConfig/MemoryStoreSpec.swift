/// `memory`: limits are optional; without any the store grows until the process dies, so
/// `check` warns about it.
public struct MemoryStoreSpec: Sendable, Equatable, Decodable {
  public var maxBytes: Int64?
  public var maxCount: Int64?
  public var maxSeconds: Int64?

  public init(maxBytes: Int64? = nil, maxCount: Int64? = nil, maxSeconds: Int64? = nil) {
    self.maxBytes = maxBytes
    self.maxCount = maxCount
    self.maxSeconds = maxSeconds
  }

  public init(from decoder: any Decoder) throws {
    let o = try ConfigObject(decoder, allowedKeys: ["max_bytes", "max_count", "max_seconds"])
    maxBytes = try o.integer("max_bytes")
    maxCount = try o.integer("max_count")
    maxSeconds = try o.integer("max_seconds")
  }
}
