import ApusConfig
import ApusRPC
import ApusScheduler
import ApusServices
import ApusStore
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// Runs every role a configuration asks for in this process, until graceful shutdown.
///
/// Named stores are built once and shared by every instance that names them. Each CAS an
/// instance serves is verified on upload (size and SHA-256) unless its tree already starts
/// with a `verify` node, so content is hashed exactly once.
public final class ApusServer: Service {
  public let config: ApusConfiguration
  private let logger: Logger
  private let home: String
  private let bound = Mutex<[SocketAddress]>([])
  private let readyWaiters = Mutex<[CheckedContinuation<[SocketAddress], Never>]>([])

  public init(config: ApusConfiguration, home: String, logger: Logger) {
    self.config = config
    self.home = home
    self.logger = logger
  }

  /// Returns the bound addresses once every listener is up.
  public func waitUntilListening() async -> [SocketAddress] {
    await withCheckedContinuation { c in
      let ready = bound.withLock { $0.count == config.servers.count ? $0 : nil }
      if let ready { c.resume(returning: ready) } else { readyWaiters.withLock { $0.append(c) } }
    }
  }

  public func run() async throws {
    let factory = StoreFactory(specs: config.stores, home: home)
    let stores = try await factory.makeAll()
    let maintenance = factory.maintenance
    var schedulers: [String: Scheduler] = [:]
    for (name, config) in config.schedulers {
      schedulers[name] = Scheduler(name: name, config: config, logger: logger)
    }
    let group = MultiThreadedEventLoopGroup.singleton
    let budget = BufferBudget(limitBytes: config.global.maxBufferedBytes)
    let fdLimit = FileDescriptorLimit.raiseToHardLimit()
    let wanted = config.servers.reduce(256) { $0 + $1.limits.maxConnections }
    if fdLimit >= 0 && fdLimit < wanted {
      logger.warning(
        "the open-file limit is below what the listeners' max_connections need",
        metadata: ["limit": "\(fdLimit)", "wanted": "\(wanted)"])
    }
    var servers: [GRPCServer] = []
    for server in config.servers {
      let table = InstanceTable(
        instances: server.instances.mapValues { instance in
          Instance(
            cas: instance.cas.map { name -> any BlobStore in
              guard case .verify = config.stores[name] else {
                return VerifyStore(backend: stores[name]!)
              }
              return stores[name]!
            },
            actionCache: instance.actionCache.map { stores[$0]! },
            actionCacheUpdates: instance.actionCacheUpdates,
            scheduler: instance.execution.map { schedulers[$0]! })
        },
        maxMessageBytes: server.maxMessageBytes)
      var router = RemoteExecutionAPI.router(for: table)
      if let name = server.workerAPI, let scheduler = schedulers[name] {
        WorkerAPIService(scheduler: scheduler, logger: logger).register(on: &router)
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
      options.uploadIdleTimeout =
        limits.uploadIdleTimeoutSeconds > 0 ? .seconds(limits.uploadIdleTimeoutSeconds) : nil
      let grpc = GRPCServer(router: router, options: options, group: group, logger: logger)
      guard let (host, port) = ServerConfig.splitHostPort(server.listen) else {
        throw ConfigError(path: "servers", "invalid listen address \(server.listen)")
      }
      let address = try await grpc.start(host: host, port: port)
      logger.info(
        "listening",
        metadata: [
          "address": "\(address)", "instances": "\(server.instances.keys.sorted())",
        ])
      servers.append(grpc)
      bound.withLock { $0.append(address) }
    }
    let addresses = bound.withLock { $0 }
    for waiter in readyWaiters.withLock({ w in defer { w = [] }; return w }) {
      waiter.resume(returning: addresses)
    }

    // Worker keep-alives, unsatisfiable actions and old operations are checked once a second.
    let ticker = Task {
      while !Task.isCancelled {
        try? await Task.sleep(for: .seconds(1))
        for scheduler in schedulers.values { await scheduler.tick() }
      }
    }
    defer { ticker.cancel() }
    // Store upkeep (the S3 expiry sweep), each on its own period.
    let upkeep = maintenance.map { job in
      Task {
        while !Task.isCancelled {
          await job.run()
          try? await Task.sleep(for: job.every)
        }
      }
    }
    defer { upkeep.forEach { $0.cancel() } }

    try? await gracefulShutdown()
    logger.info("shutting down", metadata: ["grace_seconds": "\(config.global.shutdownGraceSeconds)"])
    let grace = Duration.seconds(config.global.shutdownGraceSeconds)
    await withTaskGroup(of: Void.self) { group in
      for server in servers { group.addTask { await server.shutdown(grace: grace) } }
    }
    logger.info("stopped")
  }
}
