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
    if case .ref(let name) = self { return [(name, "ref")] }
    return children.flatMap { child in child.spec.references.map { ($0.name, "\(child.path).\($0.path)") } }
  }

  /// The stores this one wraps, with their JSON paths relative to it.
  public var children: [(path: String, spec: StoreSpec)] {
    switch self {
    case .memory, .filesystem, .grpc, .s3, .ref: return []
    case .verify(let v): return [("verify.backend", v.backend)]
    case .existenceCache(let e): return [("existence_cache.backend", e.backend)]
    case .fastSlow(let f): return [("fast_slow.fast", f.fast), ("fast_slow.slow", f.slow)]
    case .sizePartitioning(let p): return [("size_partitioning.lower", p.lower), ("size_partitioning.upper", p.upper)]
    case .completenessChecking(let c):
      return [("completeness_checking.backend", c.backend), ("completeness_checking.cas", c.cas)]
    case .shard(let s): return s.stores.enumerated().map { ("shard.stores[\($0.offset)].store", $0.element.store) }
    }
  }

  /// Whether what this tree acknowledged survives a crash: filesystem stores that fsync,
  /// and wrappers that only route to such stores. `stores` resolves `ref`s.
  public func isDurable(in stores: [String: StoreSpec]) -> Bool {
    switch self {
    case .filesystem(let f): return f.sync != .none
    case .verify, .sizePartitioning, .shard, .existenceCache:
      return children.allSatisfy { $0.spec.isDurable(in: stores) }
    case .ref(let name): return stores[name]?.isDurable(in: stores) ?? false
    case .memory, .fastSlow, .completenessChecking, .grpc, .s3: return false
    }
  }
}
