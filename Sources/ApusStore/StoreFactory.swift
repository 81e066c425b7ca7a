import ApusConfig
import ApusRPC
import NIOPosix

#if canImport(Glibc)
  import Glibc
#endif

/// Builds store trees from config specs, recursively. Named stores are built once and
/// shared: every `ref` to a name gets the same instance.
public final class StoreFactory {
  private let specs: [String: StoreSpec]
  private let home: String
  private var built: [String: any BlobStore] = [:]
  private var building: [String] = []
  /// Background work the built stores need (the S3 expiry sweep), with its period.
  public private(set) var maintenance: [(every: Duration, run: @Sendable () async -> Void)] = []

  public init(specs: [String: StoreSpec], home: String) {
    self.specs = specs
    self.home = home
  }

  /// Builds every named store (config validation has ruled out unknown refs and cycles).
  public func makeAll() async throws -> [String: any BlobStore] {
    for name in specs.keys.sorted() {
      do {
        _ = try await named(name)
      } catch let error as ConfigError {
        throw error
      } catch {
        throw ConfigError(path: "stores.\(name)", "cannot open the store: \(error)")
      }
    }
    return built
  }

  public func named(_ name: String) async throws -> any BlobStore {
    if let store = built[name] { return store }
    guard let spec = specs[name] else {
      throw ConfigError(path: "stores", "no store named \"\(name)\"")
    }
    guard !building.contains(name) else {
      throw ConfigError(path: "stores.\(name)", "stores refer to each other in a cycle")
    }
    building.append(name)
    defer { building.removeLast() }
    let store = try await make(spec)
    built[name] = store
    return store
  }

  public func make(_ spec: StoreSpec) async throws -> any BlobStore {
    switch spec {
    case .memory(let m):
      return MemoryStore(
        limits: .init(
          maxBytes: m.maxBytes, maxCount: m.maxCount.map { Int($0) },
          maxSeconds: m.maxSeconds.map { UInt32(clamping: $0) }))
    case .filesystem(let f):
      // Named after the `stores` entry it belongs to: errors reach clients, paths must not.
      let store = try await FilesystemStore.open(
        root: Self.expandTilde(f.path, home: home), maxBytes: f.maxBytes,
        name: building.last ?? "filesystem", options: .init(f))
      if f.verifyOnStart {
        // Runs once, right after the server starts serving; the long period never comes.
        maintenance.append((.seconds(366 * 86_400), { _ = await store.verifyContents() }))
      }
      return store
    case .verify(let backend, let verifyHash):
      return VerifyStore(backend: try await make(backend), verifyHash: verifyHash)
    case .fastSlow(let fast, let slow, let fill, let writeFast):
      return FastSlowStore(
        fast: try await make(fast), slow: try await make(slow), fillFastOnRead: fill, writeFast: writeFast)
    case .sizePartitioning(let threshold, let lower, let upper):
      return SizePartitioningStore(threshold: threshold, lower: try await make(lower), upper: try await make(upper))
    case .existenceCache(let backend, let seconds, let count):
      return ExistenceCacheStore(
        backend: try await make(backend), maxSeconds: UInt32(clamping: seconds), maxCount: Int(count))
    case .completenessChecking(let backend, let cas):
      return CompletenessCheckingStore(backend: try await make(backend), cas: try await make(cas))
    case .grpc(let url, let instanceName, let actionCache):
      return GRPCStore(
        client: try GRPCClient(url: url), instanceName: instanceName,
        role: actionCache ? .actionCache : .cas)
    case .shard(let shards):
      var stores: [(store: any BlobStore, weight: UInt32)] = []
      for s in shards { stores.append((try await make(s.store), s.weight)) }
      return ShardStore(shards: stores)
    case .s3(let spec):
      let env = { (name: String) -> String? in getenv(name).map { String(cString: $0) } }
      guard let key = spec.accessKeyID ?? env("AWS_ACCESS_KEY_ID"),
        let secret = spec.secretAccessKey ?? env("AWS_SECRET_ACCESS_KEY")
      else {
        throw StoreError(.invalidArgument, "s3 \(spec.bucket): no credentials (access_key_id or AWS_ACCESS_KEY_ID)")
      }
      let store = try S3Store(
        location: S3Location(
          endpoint: spec.endpoint, region: spec.region, bucket: spec.bucket, pathStyle: spec.pathStyle,
          accessKeyID: key, secretAccessKey: secret, sessionToken: spec.sessionToken ?? env("AWS_SESSION_TOKEN"),
          maxAttempts: spec.maxAttempts, requestTimeout: .seconds(Int64(spec.requestTimeoutSeconds))),
        prefix: spec.keyPrefix, multipartThreshold: Int(spec.multipartThresholdBytes),
        partBytes: Int(spec.partBytes), maxSeconds: spec.maxSeconds)
      if spec.maxSeconds != nil {
        maintenance.append((.seconds(spec.sweepIntervalSeconds), { _ = try? await store.sweep() }))
      }
      return store
    case .ref(let name):
      return try await named(name)
    }
  }

  static func expandTilde(_ path: String, home: String) -> String {
    if path == "~" { return home }
    if path.hasPrefix("~/") { return home + path.dropFirst() }
    return path
  }
}
