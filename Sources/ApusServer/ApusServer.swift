import ApusConfig
import ApusRPC
import ApusScheduler
import ApusSchedulerPostgres
import ApusServices
import ApusStore
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import UnixSignals
import Synchronization

/// Runs every role a configuration asks for in this process, until graceful shutdown.
///
/// Named stores are built once and shared by every instance that names them. Each CAS an
/// instance serves is verified on upload (size and SHA-256) unless its tree already starts
/// with a `verify` node, so content is hashed exactly once.
///
/// Its background loops (the scheduler tick, store upkeep such as the S3 expiry sweep) are
/// children of `run()`'s task group. Graceful shutdown drains in order: the listeners stop
/// accepting and in-flight calls get `global.shutdown_grace_seconds`; then the loops stop;
/// then the stores are closed; then `run()` returns.
public final class ApusServer: Service {
  public let config: ApusConfiguration
  private let logger: Logger
  private let home: String
  private let listening = Mutex(Listening())
  private let running = Mutex<Runtime?>(nil)
  private let stopping = Atomic<Bool>(false)

  /// What the admin listener reports on, once `run()` has built it.
  public struct Runtime: Sendable {
    public let schedulers: [String: any ExecutionScheduler]
    /// The named stores' usage, health and scrape-time gauges.
    public let storeMonitor: StoreMonitor
  }

  /// Nil until every listener is bound.
  public var runtime: Runtime? { running.withLock { $0 } }
  /// Graceful shutdown has begun: the listeners stop taking calls.
  public var isStopping: Bool { stopping.load(ordering: .relaxed) }

  /// The bound addresses once known, and who waits for them.
  private struct Listening {
    var addresses: [SocketAddress]?
    var waiters: [CheckedContinuation<[SocketAddress], Never>] = []
  }

  public init(config: ApusConfiguration, home: String, logger: Logger) {
    self.config = config
    self.home = home
    self.logger = logger
  }

  /// The bound addresses, in `config.servers` order, once every listener is up.
  ///
  /// If `run()` fails before that, returns the addresses bound so far (possibly none), so a
  /// caller never waits forever.
  public func waitUntilListening() async -> [SocketAddress] {
    await withCheckedContinuation { c in
      let ready = listening.withLock { state -> [SocketAddress]? in
        if let addresses = state.addresses { return addresses }
        state.waiters.append(c)
        return nil
      }
      if let ready { c.resume(returning: ready) }
    }
  }

  private func publish(_ addresses: [SocketAddress]) {
    let waiters = listening.withLock { state in
      guard state.addresses == nil else { return [CheckedContinuation<[SocketAddress], Never>]() }
      state.addresses = addresses
      defer { state.waiters = [] }
      return state.waiters
    }
    for waiter in waiters { waiter.resume(returning: addresses) }
  }

  public func run() async throws {
    let logger = self.logger
    let factory = StoreFactory(specs: config.stores, home: home)
    var servers: [GRPCServer] = []
    var addresses: [SocketAddress] = []
    var certificates: [ServerTLS] = []
    // Whatever happens, waiters are answered and what was opened is closed.
    defer { publish(addresses) }
    let schedulers: [String: any ExecutionScheduler]
    var shared: [SharedScheduler] = []
    do {
      var authorizer: Authorizer?
      if let auth = config.auth { authorizer = try await Authorizer(config: auth, logger: logger) }
      let stores = try await factory.makeAll()
      var built: [String: any ExecutionScheduler] = [:]
      for (name, scheduler) in config.schedulers {
        switch scheduler.state {
        case .memory:
          built[name] = Scheduler(name: name, config: scheduler, logger: logger)
        case .postgres(let postgres):
          let one = try SharedScheduler(name: name, config: scheduler, postgres: postgres, logger: logger)
          shared.append(one)
          built[name] = one
        }
      }
      schedulers = built
      let budget = BufferBudget(limitBytes: config.global.maxBufferedBytes)
      checkFileDescriptorLimit()
      for (i, server) in config.servers.enumerated() {
        let tls = try server.tls.map { try Self.loadTLS($0, path: "servers[\(i)].tls") }
        if let tls { certificates.append(tls) }
        let grpc = try makeServer(
          server, stores: stores, schedulers: schedulers, budget: budget, tls: tls, authorizer: authorizer)
        guard let (host, port) = ServerConfig.splitHostPort(server.listen) else {
          throw ConfigError(path: "servers", "invalid listen address \(server.listen)")
        }
        let address = try await grpc.start(host: host, port: port)
        servers.append(grpc)
        addresses.append(address)
        logger.info(
          "listening",
          metadata: [
            "address": "\(address)", "instances": "\(server.instances.keys.sorted())",
          ])
      }
    } catch {
      await stop(servers, grace: .zero)
      await factory.close()
      throw error
    }
    publish(addresses)
    running.withLock {
      $0 = Runtime(schedulers: schedulers, storeMonitor: factory.monitor)
    }

    await withDiscardingTaskGroup { group in
      group.addTask { await Self.tick(Array(schedulers.values)) }
      // Shared schedulers' pools, listeners, dispatch and lease sweeps: they start taking
      // work once their database answers, and keep retrying while it does not.
      for scheduler in shared { group.addTask { await scheduler.run() } }
      if !certificates.isEmpty {
        let reloadable = certificates
        group.addTask { await Self.watchCertificates(reloadable, logger: logger) }
        group.addTask {
          for await _ in await UnixSignalsSequence(trapping: .sighup) {
            Self.reloadCertificates(reloadable, force: true, logger: logger)
          }
        }
      }
      for job in factory.maintenance {
        group.addTask {
          await job.run { error in
            logger.warning("store upkeep failed", metadata: ["job": "\(job.name)", "error": "\(error)"])
          }
        }
      }
      // Returns on graceful shutdown, or at once if this service is cancelled.
      try? await gracefulShutdown()
      stopping.store(true, ordering: .relaxed)
      logger.info(
        "shutting down", metadata: ["grace_seconds": "\(config.global.shutdownGraceSeconds)"])
      await stop(servers, grace: .seconds(config.global.shutdownGraceSeconds))
      group.cancelAll()
    }
    await factory.close()
    logger.info("stopped")
  }

  /// Raises the open-file limit to the hard limit and warns if the listeners' connection
  /// caps cannot be reached under it.
  private func checkFileDescriptorLimit() {
    let limit = FileDescriptorLimit.raiseToHardLimit()
    let wanted = config.servers.reduce(256) { $0 + $1.limits.maxConnections }
    if limit >= 0 && limit < wanted {
      logger.warning(
        "the open-file limit is below what the listeners' max_connections need",
        metadata: ["limit": "\(limit)", "wanted": "\(wanted)"])
    }
  }

  /// One listener's router, services and options, from its config.
  private func makeServer(
    _ server: ServerConfig, stores: [String: any BlobStore], schedulers: [String: any ExecutionScheduler],
    budget: BufferBudget, tls: ServerTLS?, authorizer: Authorizer?
  ) throws -> GRPCServer {
    func store(_ name: String) throws -> any BlobStore {
      guard let store = stores[name] else {
        throw ConfigError(path: "stores", "no store named \"\(name)\"")
      }
      return store
    }
    func scheduler(_ name: String) throws -> any ExecutionScheduler {
      guard let scheduler = schedulers[name] else {
        throw ConfigError(path: "schedulers", "no scheduler named \"\(name)\"")
      }
      return scheduler
    }
    let table = InstanceTable(
      instances: try server.instances.mapValues { instance in
        Instance(
          cas: try instance.cas.map { name -> any BlobStore in
            guard case .verify = config.stores[name] else {
              return VerifyStore(backend: try store(name))
            }
            return try store(name)
          },
          actionCache: try instance.actionCache.map(store),
          actionCacheUpdates: instance.actionCacheUpdates,
          scheduler: try instance.execution.map(scheduler))
      },
      maxMessageBytes: server.maxMessageBytes, authorizer: authorizer)
    var router = RemoteExecutionAPI.router(for: table)
    if let name = server.workerAPI {
      WorkerAPIService(scheduler: try scheduler(name), logger: logger, authorizer: authorizer)
        .register(on: &router)
    }
    var options = GRPCServerOptions()
    options.maxReceiveMessageBytes = server.maxMessageBytes
    options.budget = budget
    let limits = server.limits
    options.maxConnections = limits.maxConnections
    options.maxConcurrentStreams = limits.maxConcurrentStreams
    options.maxConnectionBufferedBytes = limits.maxBufferedBytesPerConnection
    options.handshakeTimeout = .seconds(limits.handshakeTimeoutSeconds)
    options.idleTimeout = limits.idleTimeoutSeconds > 0 ? .seconds(limits.idleTimeoutSeconds) : nil
    options.keepaliveInterval =
      limits.keepaliveIntervalSeconds > 0 ? .seconds(limits.keepaliveIntervalSeconds) : nil
    options.keepaliveTimeout = .seconds(limits.keepaliveTimeoutSeconds)
    options.defaultDeadline = limits.defaultDeadlineSeconds.map { .seconds($0) }
    options.tls = tls
    options.callLogFields = RequestMetadataLog.fields
    options.responseCompression = server.responseCompression.map { rc in
      ResponseCompression(
        minBytes: rc.minBytes, encodings: rc.encodings.compactMap { MessageEncoding(rawValue: $0.rawValue) })
    }
    let slow = config.global.slowRequestSeconds
    options.slowCallThreshold = slow > 0 ? .seconds(slow) : nil
    options.uploadIdleTimeout =
      limits.uploadIdleTimeoutSeconds > 0 ? .seconds(limits.uploadIdleTimeoutSeconds) : nil
    return GRPCServer(
      router: router, options: options, group: MultiThreadedEventLoopGroup.singleton,
      logger: logger)
  }

  /// Stops every listener at once; each gives its running calls `grace`.
  private func stop(_ servers: [GRPCServer], grace: Duration) async {
    await withDiscardingTaskGroup { group in
      for server in servers { group.addTask { await server.shutdown(grace: grace) } }
    }
  }

  /// A listener's TLS from its config block; a file that does not load is a config error at `path`.
  public static func loadTLS(
    _ tls: ListenerTLSConfig, path: String, applicationProtocols: [String] = ["h2"]
  ) throws -> ServerTLS {
    do {
      return try ServerTLS(
        files: .init(certificate: tls.certificate, privateKey: tls.privateKey, clientCA: tls.clientCA),
        clientAuth: tls.clientAuth == .require ? .require : tls.clientAuth == .optional ? .optional : .none,
        applicationProtocols: applicationProtocols)
    } catch let error as RPCError {
      throw ConfigError(path: path, error.message)
    }
  }

  /// Loads listeners' certificates again when their files change (checked every 2 s), until
  /// the task is cancelled.
  public static func watchCertificates(_ certificates: [ServerTLS], logger: Logger) async {
    while true {
      do { try await Task.sleep(for: .seconds(2)) } catch { return }
      reloadCertificates(certificates, force: false, logger: logger)
    }
  }

  static func reloadCertificates(_ certificates: [ServerTLS], force: Bool, logger: Logger) {
    for tls in certificates {
      do {
        if try tls.reload(force: force) {
          logger.notice("TLS certificate loaded again; new connections use it", metadata: ["certificate": "\(tls.files.certificate)"])
        }
      } catch {
        // A rotation written in two steps can be caught half-done: the next check tries again.
        logger.warning(
          "TLS certificate not reloaded; connections keep the previous one",
          metadata: ["certificate": "\(tls.files.certificate)", "error": "\(error)"])
      }
    }
  }

  /// Worker keep-alives, unsatisfiable actions and old operations, checked once a second
  /// until the task is cancelled.
  static func tick(_ schedulers: [any ExecutionScheduler]) async {
    while true {
      do { try await Task.sleep(for: .seconds(1)) } catch { return }
      for scheduler in schedulers { await scheduler.tick() }
    }
  }
}
