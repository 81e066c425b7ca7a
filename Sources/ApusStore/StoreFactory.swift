import ApusConfig
import ApusRPC
import Logging
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
  /// Background work the built stores need (the S3 expiry sweep); the caller runs it.
  public private(set) var maintenance: [StoreMaintenance] = []
  /// Releases what the built stores hold (HTTP clients, connections); see ``close()``.
  private var closers: [@Sendable () async -> Void] = []
  /// One circuit breaker per remote backend (endpoint and bucket, or URL), shared by every
  /// store that reaches it.
  public private(set) var breakers: [String: CircuitBreaker] = [:]
  private let logger = Logger(label: "apus.store")

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

  /// Closes what the built stores hold, newest first; call once no request can reach them.
  public func close() async {
    let closers = self.closers
    self.closers = []
    for close in closers.reversed() { await close() }
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
      let name = building.last ?? "filesystem"
      let store = try await FilesystemStore.open(
        root: Self.expandTilde(f.path, home: home), maxBytes: f.maxBytes, name: name,
        options: .init(f))
      if f.verifyOnStart {
        maintenance.append(
          StoreMaintenance(name: "verify_on_start \(name)", every: nil) {
            _ = await store.verifyContents()
          })
      }
      return store
    case .verify(let v):
      return VerifyStore(backend: try await make(v.backend), verifyHash: v.verifyHash)
    case .fastSlow(let f):
      let fast = try await make(f.fast), slow = try await make(f.slow)
      guard let behind = f.writeBehind, f.slowWrite == .async else {
        return FastSlowStore(fast: fast, slow: slow, fillFastOnRead: f.fillFastOnRead, writeFast: f.writeFast)
      }
      let name = "fast_slow \"\(building.last ?? "")\""
      let (queue, restored) = try await WriteBehindQueue.open(
        directory: Self.expandTilde(behind.path, home: home), name: name, maxBytes: behind.maxBytes,
        maxEntries: behind.maxEntries, concurrency: behind.concurrency, logger: logger)
      for digest in restored { fast.pin(digest) }
      let store = FastSlowStore(
        fast: fast, slow: slow, fillFastOnRead: f.fillFastOnRead, writeFast: true, policy: .async(queue))
      maintenance.append(StoreMaintenance(name: "write-behind of \(name)", every: nil) { await store.runWriteBehind() })
      return store
    case .sizePartitioning(let p):
      return SizePartitioningStore(
        threshold: p.thresholdBytes, lower: try await make(p.lower), upper: try await make(p.upper))
    case .existenceCache(let e):
      return ExistenceCacheStore(
        backend: try await make(e.backend), maxSeconds: UInt32(clamping: e.maxSeconds),
        maxCount: Int(e.maxCount))
    case .completenessChecking(let c):
      return CompletenessCheckingStore(backend: try await make(c.backend), cas: try await make(c.cas))
    case .grpc(let g):
      var options = try GRPCServerOptions.dialing(g.url, tls: g.tls)
      options.connectTimeout = .seconds(g.connectTimeoutSeconds)
      if let path = g.tokenFile { options.callMetadata = try BearerToken.metadata(fromFile: path) }
      let client = try GRPCClient(url: g.url, options: options)
      closers.append { await client.close() }
      let (breaker, isNew) = breaker(for: "grpc \(g.url)", g.circuitBreaker)
      let store = GRPCStore(
        client: client, instanceName: g.instanceName, role: g.actionCache ? .actionCache : .cas,
        timeout: .seconds(g.timeoutSeconds), breaker: breaker)
      if isNew { addProber(breaker) { try await store.probe() } }
      return store
    case .shard(let s):
      var stores: [(store: any BlobStore, weight: UInt32)] = []
      for shard in s.stores { stores.append((try await make(shard.store), shard.weight)) }
      return ShardStore(shards: stores)
    case .s3(let spec):
      let env = { (name: String) -> String? in getenv(name).map { String(cString: $0) } }
      guard let key = spec.accessKeyID ?? env("AWS_ACCESS_KEY_ID"),
        let secret = spec.secretAccessKey ?? env("AWS_SECRET_ACCESS_KEY")
      else {
        throw StoreError(.invalidArgument, "s3 \(spec.bucket): no credentials (access_key_id or AWS_ACCESS_KEY_ID)")
      }
      let location = S3Location(
        endpoint: spec.endpoint, region: spec.region, bucket: spec.bucket, pathStyle: spec.pathStyle,
        accessKeyID: key, secretAccessKey: secret, sessionToken: spec.sessionToken ?? env("AWS_SESSION_TOKEN"),
        maxAttempts: spec.maxAttempts,
        timeouts: S3Timeouts(
          connect: .seconds(spec.connectTimeoutSeconds), firstByte: .seconds(spec.firstByteTimeoutSeconds),
          idle: .seconds(spec.idleTimeoutSeconds), request: .seconds(spec.requestTimeoutSeconds)),
        caFile: spec.caFile)
      let (breaker, isNew) = breaker(for: location.displayName, spec.circuitBreaker)
      let store = try S3Store(
        location: location, breaker: breaker, prefix: spec.keyPrefix,
        multipartThreshold: Int(spec.multipartThresholdBytes), partBytes: Int(spec.partBytes),
        maxSeconds: spec.maxSeconds)
      if isNew {
        maintenance.append(
          StoreMaintenance(name: "reachability check of \(location.displayName)", every: nil) {
            await store.checkReachable()
          })
        addProber(breaker) { try await store.probe() }
      }
      if spec.maxSeconds != nil {
        maintenance.append(
          StoreMaintenance(name: "s3 expiry sweep (\(spec.bucket))", every: .seconds(spec.sweepIntervalSeconds)) {
            _ = try await store.sweep()
          })
      }
      closers.append { await store.close() }
      return store
    case .ref(let name):
      return try await named(name)
    }
  }

  /// The breaker for `backend`, made on first use with `config`; true when it is new.
  private func breaker(for backend: String, _ config: CircuitBreakerConfig) -> (CircuitBreaker, Bool) {
    if let existing = breakers[backend] { return (existing, false) }
    let breaker = CircuitBreaker(
      name: backend, failureThreshold: config.failureThreshold, openDuration: .seconds(config.openSeconds),
      logger: logger)
    breakers[backend] = breaker
    return (breaker, true)
  }

  private func addProber(_ breaker: CircuitBreaker, _ probe: @escaping @Sendable () async throws -> Void) {
    maintenance.append(StoreMaintenance(name: "circuit breaker of \(breaker.name)", every: nil) {
      await breaker.runProber(probe)
    })
  }

  static func expandTilde(_ path: String, home: String) -> String {
    if path == "~" { return home }
    if path.hasPrefix("~/") { return home + path.dropFirst() }
    return path
  }
}
