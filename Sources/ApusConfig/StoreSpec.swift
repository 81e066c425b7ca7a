/// One node of a store tree, decoded from `{"<kind>": {...}}`.
public indirect enum StoreSpec: Sendable, Equatable, Decodable {
  /// In-memory LRU.
  case memory(MemoryStoreSpec)
  /// Files under a directory, LRU by bytes.
  case filesystem(FilesystemStoreSpec)
  /// Size and SHA-256 check of uploads in front of `backend`.
  case verify(backend: StoreSpec, verifyHash: Bool)

  static let kinds = ["memory", "filesystem", "verify"]

  public init(from decoder: any Decoder) throws {
    let object = try ConfigObject(decoder, allowedKeys: Set(Self.kinds))
    guard object.keys.count == 1, let kind = object.keys.first else {
      throw ConfigError(
        path: jsonPath(decoder.codingPath),
        "expected an object with exactly one store kind: \(Self.kinds.joined(separator: ", "))")
    }
    switch kind {
    case "memory":
      self = .memory(try object.decode(MemoryStoreSpec.self, kind)!)
    case "filesystem":
      self = .filesystem(try object.decode(FilesystemStoreSpec.self, kind)!)
    default:
      let spec = try object.decode(VerifySpec.self, kind)!
      self = .verify(backend: spec.backend, verifyHash: spec.verifyHash)
    }
  }
}

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

/// `filesystem`: `path` is created if missing; `~` expands to `$HOME`.
public struct FilesystemStoreSpec: Sendable, Equatable, Decodable {
  public var path: String
  public var maxBytes: Int64?

  public init(path: String, maxBytes: Int64? = nil) {
    self.path = path
    self.maxBytes = maxBytes
  }

  public init(from decoder: any Decoder) throws {
    let o = try ConfigObject(decoder, allowedKeys: ["path", "max_bytes"])
    path = try o.requiredString("path")
    guard !path.isEmpty else { throw o.error("path", "must not be empty") }
    maxBytes = try o.integer("max_bytes")
  }
}

struct VerifySpec: Decodable {
  var backend: StoreSpec
  var verifyHash: Bool

  init(from decoder: any Decoder) throws {
    let o = try ConfigObject(decoder, allowedKeys: ["backend", "verify_hash"])
    guard let backend = try o.decode(StoreSpec.self, "backend") else {
      throw o.error("backend", "is required")
    }
    self.backend = backend
    verifyHash = try o.bool("verify_hash") ?? true
  }
}
