import ApusConfig
import ApusRPC
import CoreMetrics
import Logging
import NIOPosix

#if canImport(Glibc)
  import Glibc
#endif

/// Builds store trees from config specs, recursively. Named stores are built once and
/// shared: every `ref` to a name gets the same instance.
///
/// Each named store is wrapped in an `InstrumentedStore` (its `apus_store_*` metrics); the
/// factory also remembers, per named store, what it holds (``usage()``) and which remote
/// backends it needs (``health()``).
public final class StoreFactory {
  private let specs: [String: StoreSpec]
  private let home: String
  private let metricsFactory: any MetricsFactory
  private var built: [String: Node] = [:]
  private var building: [String] = []
  /// Per named store: its metric handles, and the write-behind queues inside it.
  private var metrics: [String: StoreMetrics] = [:]
  private var writeBehind: [String: [WriteBehindQueue]] = [:]
  /// One reachability probe per remote backend, like the breakers.
  private var probes: [String: BackendProbe] = [:]

  /// A built store with what the factory knows about it.
  private struct Node {
    var store: any BlobStore
    /// Entries and bytes held, if the store knows.
    var usage: (@Sendable () -> StoreUsage)?
    var reach: StoreReach

    /// A wrapper around this node's store: same content, same backends.
    func wrapped(_ store: any BlobStore) -> Node {
      Node(store: store, usage: usage, reach: reach)
    }
  }
  /// Background work the built stores need (the S3 expiry sweep); the caller runs it.
  public private(set) var maintenance: [StoreMaintenance] = []
  /// Releases what the built stores hold (HTTP clients, connections); see ``close()``.
  private var closers: [@Sendable () async -> Void] = []
  /// One circuit breaker per remote backend (endpoint and bucket, or URL), shared by every
  /// store that reaches it.
  public private(set) var breakers: [String: CircuitBreaker] = [:]
  /// One credentials provider per `credentials` mode read from outside the config, shared
  /// by every `s3` store using it (one metadata call per renewal, not one per store).
  private var credentialProviders: [S3CredentialsMode: S3CredentialsProvider] = [:]
  private let logger = Logger(label: "apus.store")

  /// `metrics` is the bootstrapped factory unless a test passes its own.
  public init(specs: [String: StoreSpec], home: String, metrics: any MetricsFactory = MetricsSystem.factory) {
    self.specs = specs
    self.home = home
    self.metricsFactory = metrics
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
    return built.mapValues(\.store)
  }

  /// What the admin listener watches of the named stores built so far: a `Sendable` view,
  /// safe to keep and use from any task once ``makeAll()`` has returned.
  public var monitor: StoreMonitor {
    StoreMonitor(
      stores: built.map { name, node in
        StoreMonitor.Named(
          name: name, usage: node.usage, reach: node.reach, metrics: metrics[name],
          writeBehind: writeBehind[name] ?? [])
      })
  }

  /// Entries and bytes held by each named store that knows (memory, filesystem, and wrappers
  /// of them).
  public func usage() -> [String: StoreUsage] { monitor.usage() }

  /// Sets the store gauges to what the stores hold now (see ``StoreMonitor/updateGauges()``).
  public func updateGauges() { monitor.updateGauges() }

  /// Whether each named store can serve (see ``StoreMonitor/health()``).
  public func health() async -> [String: StoreHealth] { await monitor.health() }

  /// Closes what the built stores hold, newest first; call once no request can reach them.
  public func close() async {
    let closers = self.closers
    self.closers = []
    for close in closers.reversed() { await close() }
  }

  public func named(_ name: String) async throws -> any BlobStore {
    try await namedNode(name).store
  }

  private func namedNode(_ name: String) async throws -> Node {
    if let node = built[name] { return node }
    guard let spec = specs[name] else {
      throw ConfigError(path: "stores", "no store named \"\(name)\"")
    }
    guard !building.contains(name) else {
      throw ConfigError(path: "stores.\(name)", "stores refer to each other in a cycle")
    }
    building.append(name)
    defer { building.removeLast() }
    let metrics = StoreMetrics(store: name, factory: metricsFactory)
    self.metrics[name] = metrics
    var node = try await build(spec)
    node.store = InstrumentedStore(node.store, metrics: metrics)
    built[name] = node
    return node
  }

  public func make(_ spec: StoreSpec) async throws -> any BlobStore {
    try await build(spec).store
  }

  /// The eviction counter of the named store being built, if any.
  private var evictions: Counter? { building.last.flatMap { metrics[$0]?.evictions } }

  private func build(_ spec: StoreSpec) async throws -> Node {
    switch spec {
    case .memory(let m):
      let store = MemoryStore(
        limits: .init(
          maxBytes: m.maxBytes, maxCount: m.maxCount.map { Int($0) },
          maxSeconds: m.maxSeconds.map { UInt32(clamping: $0) }),
        evictions: evictions)
      return Node(store: store, usage: { store.usage }, reach: .local)
    case .filesystem(let f):
      // Named after the `stores` entry it belongs to: errors reach clients, paths must not.
      let name = building.last ?? "filesystem"
      let store = try await FilesystemStore.open(
        root: Self.expandTilde(f.path, home: home), maxBytes: f.maxBytes, name: name,
        options: .init(f), evictions: evictions)
      if f.verifyOnStart {
        maintenance.append(
          StoreMaintenance(name: "verify_on_start \(name)", every: nil) {
            _ = await store.verifyContents()
          })
      }
      return Node(store: store, usage: { store.usage }, reach: .local)
    case .verify(let v):
      let backend = try await build(v.backend)
      return backend.wrapped(VerifyStore(backend: backend.store, verifyHash: v.verifyHash))
    case .fastSlow(let f):
      let fastNode = try await build(f.fast), slowNode = try await build(f.slow)
      let fast = fastNode.store, slow = slowNode.store
      let reach = StoreReach.fastSlow(fast: fastNode.reach, slow: slowNode.reach)
      guard let behind = f.writeBehind, f.slowWrite == .async else {
        let store = FastSlowStore(fast: fast, slow: slow, fillFastOnRead: f.fillFastOnRead, writeFast: f.writeFast)
        return Node(store: store, usage: fastNode.usage, reach: reach)
      }
      let name = "fast_slow \"\(building.last ?? "")\""
      let (queue, restored) = try await WriteBehindQueue.open(
        directory: Self.expandTilde(behind.path, home: home), name: name, maxBytes: behind.maxBytes,
        maxEntries: behind.maxEntries, concurrency: behind.concurrency, logger: logger)
      for digest in restored { fast.pin(digest) }
      if let owner = building.last { writeBehind[owner, default: []].append(queue) }
      let store = FastSlowStore(
        fast: fast, slow: slow, fillFastOnRead: f.fillFastOnRead, writeFast: true, policy: .async(queue))
      maintenance.append(StoreMaintenance(name: "write-behind of \(name)", every: nil) { await store.runWriteBehind() })
      return Node(store: store, usage: fastNode.usage, reach: reach)
    case .sizePartitioning(let p):
      let lower = try await build(p.lower), upper = try await build(p.upper)
      let store = SizePartitioningStore(threshold: p.thresholdBytes, lower: lower.store, upper: upper.store)
      return Node(store: store, usage: Self.sum([lower, upper]), reach: .all([lower.reach, upper.reach]))
    case .existenceCache(let e):
      let backend = try await build(e.backend)
      return backend.wrapped(
        ExistenceCacheStore(
          backend: backend.store, maxSeconds: UInt32(clamping: e.maxSeconds), maxCount: Int(e.maxCount)))
    case .completenessChecking(let c):
      let backend = try await build(c.backend), cas = try await build(c.cas)
      let store = CompletenessCheckingStore(backend: backend.store, cas: cas.store)
      return Node(store: store, usage: backend.usage, reach: .all([backend.reach, cas.reach]))
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
      let probe = probe(for: breaker.name) { timeout in try await store.probe(timeout: timeout) }
      return Node(store: store, usage: nil, reach: .remote(probe))
    case .shard(let s):
      var nodes: [Node] = []
      for shard in s.stores { nodes.append(try await build(shard.store)) }
      let store = ShardStore(shards: zip(nodes, s.stores).map { ($0.store, $1.weight) })
      return Node(store: store, usage: Self.sum(nodes), reach: .all(nodes.map(\.reach)))
    case .s3(let spec):
      let location = S3Location(
        endpoint: spec.endpoint, region: spec.region, bucket: spec.bucket, pathStyle: spec.pathStyle,
        credentials: credentialsProvider(spec),
        maxAttempts: spec.maxAttempts,
        timeouts: S3Timeouts(
          connect: .seconds(spec.connectTimeoutSeconds), firstByte: .seconds(spec.firstByteTimeoutSeconds),
          idle: .seconds(spec.idleTimeoutSeconds), request: .seconds(spec.requestTimeoutSeconds)),
        caFile: spec.caFile)
      let (breaker, isNew) = breaker(for: location.displayName, spec.circuitBreaker)
      let store = try S3Store(
        location: location, breaker: breaker, prefix: spec.keyPrefix,
        multipartThreshold: Int(spec.multipartThresholdBytes), partBytes: Int(spec.partBytes),
        maxSeconds: spec.maxSeconds, compression: spec.compression)
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
      let probe = probe(for: location.displayName) { _ in
        // The breaker's probe, under the caller's deadline the health check sets.
        let status: UInt
        do {
          status = try await store.probe()
        } catch let error as StoreError where error.code == .deadlineExceeded {
          throw StoreError(.unavailable, "HEAD of the bucket got no answer in time")
        } catch let error as StoreError where error.message.hasPrefix("s3 HEAD") {
          // The backend's name comes first in the reason already.
          throw StoreError(error.code, String(error.message.dropFirst(3)))
        }
        guard status < 500 else { throw StoreError(.unavailable, "HEAD of the bucket answered \(status)") }
      }
      return Node(store: store, usage: nil, reach: .remote(probe))
    case .ref(let name):
      return try await namedNode(name)
    }
  }

  /// The provider for an `s3` store's `credentials` (the spec has ruled out contradictions).
  private func credentialsProvider(_ spec: S3StoreSpec) -> S3CredentialsProvider {
    if spec.credentials == .static, let key = spec.accessKeyID, let secret = spec.secretAccessKey {
      return .fixed(AWSCredentials(accessKeyID: key, secretAccessKey: secret, sessionToken: spec.sessionToken))
    }
    if let shared = credentialProviders[spec.credentials] { return shared }
    let provider = S3CredentialsProvider.make(spec.credentials, staticKeys: nil)
    credentialProviders[spec.credentials] = provider
    closers.append { await provider.close() }
    return provider
  }

  /// The usage of stores that split their content between `nodes`, when every one knows its own.
  private static func sum(_ nodes: [Node]) -> (@Sendable () -> StoreUsage)? {
    let parts = nodes.compactMap(\.usage)
    guard parts.count == nodes.count, !parts.isEmpty else { return nil }
    return { parts.reduce(StoreUsage(entries: 0, bytes: 0)) { $0 + $1() } }
  }

  /// The reachability probe for `backend`, made on first use.
  private func probe(
    for backend: String, _ check: @escaping @Sendable (Duration) async throws -> Void
  ) -> BackendProbe {
    if let existing = probes[backend] { return existing }
    let probe = BackendProbe(name: backend, check: check)
    probes[backend] = probe
    return probe
  }

  /// The breaker for `backend`, made on first use with `config`; true when it is new.
  private func breaker(for backend: String, _ config: CircuitBreakerConfig) -> (CircuitBreaker, Bool) {
    if let existing = breakers[backend] { return (existing, false) }
    let breaker = CircuitBreaker(
      name: backend, failureThreshold: config.failureThreshold, openDuration: .seconds(config.openSeconds),
      logger: logger, metrics: metricsFactory)
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

