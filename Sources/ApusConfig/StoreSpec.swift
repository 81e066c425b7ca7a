/// One node of a store tree, decoded from `{"<kind>": {...}}` (or `{"ref": "name"}`).
public indirect enum StoreSpec: Sendable, Equatable, Decodable {
  /// In-memory LRU.
  case memory(MemoryStoreSpec)
  /// Files under a directory, LRU by bytes.
  case filesystem(FilesystemStoreSpec)
  /// Size and SHA-256 check of uploads in front of `backend`.
  case verify(backend: StoreSpec, verifyHash: Bool)
  /// A fast tier in front of a slow one.
  case fastSlow(fast: StoreSpec, slow: StoreSpec, fillFastOnRead: Bool, writeFast: Bool)
  /// Blobs under `threshold` bytes to `lower`, the rest to `upper`.
  case sizePartitioning(threshold: Int64, lower: StoreSpec, upper: StoreSpec)
  /// Positive `has` answers remembered for `maxSeconds`.
  case existenceCache(backend: StoreSpec, maxSeconds: Int64, maxCount: Int64)
  /// An action cache returning only results whose blobs are all in `cas`.
  case completenessChecking(backend: StoreSpec, cas: StoreSpec)
  /// Another REAPI server's CAS or action cache.
  case grpc(url: String, instanceName: String, actionCache: Bool)
  /// Blobs spread over stores by digest, weighted.
  case shard([ShardSpec])
  /// Objects in an S3-compatible bucket.
  case s3(S3StoreSpec)
  /// Another named store from `stores`.
  case ref(String)

  static let kinds = [
    "memory", "filesystem", "verify", "fast_slow", "size_partitioning", "existence_cache",
    "completeness_checking", "grpc", "shard", "s3", "ref",
  ]

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
    case "s3":
      self = .s3(try object.decode(S3StoreSpec.self, kind)!)
    case "ref":
      let name = try object.requiredString("ref")
      guard !name.isEmpty else { throw object.error("ref", "expected a store name") }
      self = .ref(name)
    default:
      self = try object.decode(WrapperSpec.self, kind)!.spec
    }
  }

  /// The `ref` names this tree uses, with the JSON path of each (relative to the tree).
  public var references: [(name: String, path: String)] {
    switch self {
    case .memory, .filesystem, .grpc, .s3: return []
    case .ref(let name): return [(name, "ref")]
    case .verify(let b, _): return b.references.map { ($0.name, "verify.backend.\($0.path)") }
    case .existenceCache(let b, _, _):
      return b.references.map { ($0.name, "existence_cache.backend.\($0.path)") }
    case .fastSlow(let fast, let slow, _, _):
      return fast.references.map { ($0.name, "fast_slow.fast.\($0.path)") }
        + slow.references.map { ($0.name, "fast_slow.slow.\($0.path)") }
    case .sizePartitioning(_, let lower, let upper):
      return lower.references.map { ($0.name, "size_partitioning.lower.\($0.path)") }
        + upper.references.map { ($0.name, "size_partitioning.upper.\($0.path)") }
    case .completenessChecking(let b, let cas):
      return b.references.map { ($0.name, "completeness_checking.backend.\($0.path)") }
        + cas.references.map { ($0.name, "completeness_checking.cas.\($0.path)") }
    case .shard(let shards):
      return shards.enumerated().flatMap { i, s in
        s.store.references.map { ($0.name, "shard.stores[\(i)].store.\($0.path)") }
      }
    }
  }
}

/// One shard of a `shard` store.
public struct ShardSpec: Sendable, Equatable {
  public var store: StoreSpec
  public var weight: UInt32
}

/// Decodes the wrapper kinds, each from its own object.
private struct WrapperSpec: Decodable {
  var spec: StoreSpec

  init(from decoder: any Decoder) throws {
    guard let kind = decoder.codingPath.last?.stringValue else {
      throw ConfigError(path: jsonPath(decoder.codingPath), "unknown store kind")
    }
    func required(_ o: ConfigObject, _ key: String) throws -> StoreSpec {
      guard let spec = try o.decode(StoreSpec.self, key) else { throw o.error(key, "is required") }
      return spec
    }
    switch kind {
    case "verify":
      let o = try ConfigObject(decoder, allowedKeys: ["backend", "verify_hash"])
      spec = .verify(backend: try required(o, "backend"), verifyHash: try o.bool("verify_hash") ?? true)
    case "fast_slow":
      let o = try ConfigObject(decoder, allowedKeys: ["fast", "slow", "fill_fast_on_read", "write_fast"])
      spec = .fastSlow(
        fast: try required(o, "fast"), slow: try required(o, "slow"),
        fillFastOnRead: try o.bool("fill_fast_on_read") ?? true, writeFast: try o.bool("write_fast") ?? true)
    case "size_partitioning":
      let o = try ConfigObject(decoder, allowedKeys: ["threshold_bytes", "lower", "upper"])
      guard let threshold = try o.integer("threshold_bytes") else {
        throw o.error("threshold_bytes", "is required")
      }
      spec = .sizePartitioning(threshold: threshold, lower: try required(o, "lower"), upper: try required(o, "upper"))
    case "existence_cache":
      let o = try ConfigObject(decoder, allowedKeys: ["backend", "max_seconds", "max_count"])
      spec = .existenceCache(
        backend: try required(o, "backend"), maxSeconds: try o.integer("max_seconds") ?? 600,
        maxCount: try o.integer("max_count") ?? 1_000_000)
    case "completeness_checking":
      let o = try ConfigObject(decoder, allowedKeys: ["backend", "cas"])
      spec = .completenessChecking(backend: try required(o, "backend"), cas: try required(o, "cas"))
    case "grpc":
      let o = try ConfigObject(decoder, allowedKeys: ["url", "instance_name", "role"])
      let url = try o.requiredString("url")
      guard url.hasPrefix("grpc://"), ServerConfig.splitHostPort(String(url.dropFirst(7))) != nil else {
        throw o.error("url", "expected grpc://host:port, got \"\(url)\"")
      }
      let role = try o.string("role") ?? "cas"
      guard role == "cas" || role == "action_cache" else {
        throw o.error("role", "expected cas or action_cache, got \"\(role)\"")
      }
      spec = .grpc(url: url, instanceName: try o.string("instance_name") ?? "", actionCache: role == "action_cache")
    default:  // "shard"
      let o = try ConfigObject(decoder, allowedKeys: ["stores"])
      guard let entries = try o.decode([ShardEntry].self, "stores"), !entries.isEmpty else {
        throw o.error("stores", "at least one shard is required")
      }
      spec = .shard(entries.map { ShardSpec(store: $0.store, weight: $0.weight) })
    }
  }

  struct ShardEntry: Decodable {
    var store: StoreSpec
    var weight: UInt32
    init(from decoder: any Decoder) throws {
      let o = try ConfigObject(decoder, allowedKeys: ["store", "weight"])
      guard let store = try o.decode(StoreSpec.self, "store") else { throw o.error("store", "is required") }
      self.store = store
      weight = UInt32(clamping: try o.integer("weight") ?? 1)
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

/// `s3`: any S3-compatible endpoint (AWS, MinIO, Ceph RGW, R2). Credentials default to the
/// standard `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN` variables.
public struct S3StoreSpec: Sendable, Equatable, Decodable {
  public var endpoint: String
  public var region: String
  public var bucket: String
  public var keyPrefix: String
  /// `endpoint/bucket/key` (MinIO, Ceph, tests) instead of `bucket.endpoint/key`.
  public var pathStyle: Bool
  public var accessKeyID: String?
  public var secretAccessKey: String?
  public var sessionToken: String?
  public var multipartThresholdBytes: Int64
  public var partBytes: Int64
  public var maxAttempts: Int
  public var requestTimeoutSeconds: Int
  /// Objects not written or read for this long are deleted by the sweep; absent: never.
  public var maxSeconds: Int64?
  public var sweepIntervalSeconds: Int64

  public init(from decoder: any Decoder) throws {
    let o = try ConfigObject(
      decoder,
      allowedKeys: [
        "endpoint", "region", "bucket", "key_prefix", "path_style", "access_key_id",
        "secret_access_key", "session_token", "multipart_threshold_bytes", "part_bytes",
        "max_attempts", "request_timeout_seconds", "max_seconds", "sweep_interval_seconds",
      ])
    endpoint = try o.requiredString("endpoint")
    guard endpoint.hasPrefix("http://") || endpoint.hasPrefix("https://") else {
      throw o.error("endpoint", "expected http(s)://host[:port], got \"\(endpoint)\"")
    }
    region = try o.string("region") ?? "us-east-1"
    bucket = try o.requiredString("bucket")
    guard !bucket.isEmpty, !bucket.contains("/") else { throw o.error("bucket", "expected a bucket name") }
    keyPrefix = try o.string("key_prefix") ?? ""
    pathStyle = try o.bool("path_style") ?? false
    accessKeyID = try o.string("access_key_id")
    secretAccessKey = try o.string("secret_access_key")
    sessionToken = try o.string("session_token")
    multipartThresholdBytes = try o.integer("multipart_threshold_bytes") ?? (8 << 20)
    partBytes = try o.integer("part_bytes") ?? (8 << 20)
    guard partBytes >= 5 << 20 else { throw o.error("part_bytes", "S3 parts are at least 5 MiB (5242880)") }
    maxAttempts = Int(try o.integer("max_attempts") ?? 4)
    requestTimeoutSeconds = Int(try o.integer("request_timeout_seconds") ?? 60)
    maxSeconds = try o.integer("max_seconds")
    sweepIntervalSeconds = try o.integer("sweep_interval_seconds") ?? 3600
  }
}
