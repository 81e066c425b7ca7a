/// One node of a store tree, decoded from `{"<kind>": {...}}` (or `{"ref": "name"}`).
///
/// Each kind's keys, defaults and documentation live in one type (`MemoryStoreSpec`,
/// `VerifyStoreSpec`, …), which is also the case's payload, so decoding, the factory and
/// `apus check` cannot disagree about what a kind holds.
public indirect enum StoreSpec: Sendable, Equatable, Decodable {
  /// In-memory LRU.
  case memory(MemoryStoreSpec)
  /// Files under a directory, LRU by bytes.
  case filesystem(FilesystemStoreSpec)
  /// Size and SHA-256 check of uploads in front of a backend.
  case verify(VerifyStoreSpec)
  /// A fast tier in front of a slow one.
  case fastSlow(FastSlowStoreSpec)
  /// Small blobs to one store, the rest to another.
  case sizePartitioning(SizePartitioningStoreSpec)
  /// Positive `has` answers remembered for a while.
  case existenceCache(ExistenceCacheStoreSpec)
  /// An action cache returning only results whose blobs are all in a CAS.
  case completenessChecking(CompletenessCheckingStoreSpec)
  /// Another REAPI server's CAS or action cache.
  case grpc(GRPCStoreSpec)
  /// Blobs spread over stores by digest, weighted.
  case shard(ShardStoreSpec)
  /// Objects in an S3-compatible bucket.
  case s3(S3StoreSpec)
  /// Another named store from `stores`.
  case ref(String)

  /// Every store kind, as written in the config.
  public static let kinds = [
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
    func payload<T: Decodable>(_ type: T.Type) throws -> T {
      guard let value = try object.decode(type, kind) else { throw object.error(kind, "is required") }
      return value
    }
    switch kind {
    case "memory":
      self = .memory(try payload(MemoryStoreSpec.self))
    case "filesystem":
      self = .filesystem(try object.decode(FilesystemStoreSpec.self, kind)!)
    case "verify":
      self = .verify(try payload(VerifyStoreSpec.self))
    case "fast_slow":
      self = .fastSlow(try payload(FastSlowStoreSpec.self))
    case "size_partitioning":
      self = .sizePartitioning(try payload(SizePartitioningStoreSpec.self))
    case "existence_cache":
      self = .existenceCache(try payload(ExistenceCacheStoreSpec.self))
    case "completeness_checking":
      self = .completenessChecking(try payload(CompletenessCheckingStoreSpec.self))
    case "grpc":
      self = .grpc(try payload(GRPCStoreSpec.self))
    case "shard":
      self = .shard(try payload(ShardStoreSpec.self))
    case "s3":
      self = .s3(try payload(S3StoreSpec.self))
    case "ref":
      let name = try object.requiredString("ref")
      guard !name.isEmpty else { throw object.error("ref", "expected a store name") }
      self = .ref(name)
    default:
      // Unreachable while `kinds` and this switch agree; an error, never a fall-through.
      throw object.error(kind, "unknown store kind; expected one of: \(Self.kinds.joined(separator: ", "))")
    }
  }

  /// The `ref` names this tree uses, with the JSON path of each (relative to the tree).
  public var references: [(name: String, path: String)] {
    func under(_ prefix: String, _ spec: StoreSpec) -> [(name: String, path: String)] {
      spec.references.map { ($0.name, "\(prefix).\($0.path)") }
    }
    switch self {
    case .memory, .filesystem, .grpc, .s3: return []
    case .ref(let name): return [(name, "ref")]
    case .verify(let v): return under("verify.backend", v.backend)
    case .existenceCache(let e): return under("existence_cache.backend", e.backend)
    case .fastSlow(let f): return under("fast_slow.fast", f.fast) + under("fast_slow.slow", f.slow)
    case .sizePartitioning(let p):
      return under("size_partitioning.lower", p.lower) + under("size_partitioning.upper", p.upper)
    case .completenessChecking(let c):
      return under("completeness_checking.backend", c.backend)
        + under("completeness_checking.cas", c.cas)
    case .shard(let s):
      return s.stores.enumerated().flatMap { i, shard in under("shard.stores[\(i)].store", shard.store) }
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
