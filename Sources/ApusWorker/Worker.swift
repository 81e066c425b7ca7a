import ApusConfig
import ApusProto
import ApusRPC
import ApusStore
import Logging
import NIOPosix
import ServiceLifecycle
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// A worker: registers with a scheduler over the WorkerAPI stream, runs the actions it is
/// given (up to `max_concurrent_actions` at once) and reports their results.
///
/// On graceful shutdown it says `going_away`, takes no new actions (any that arrive are handed
/// back), finishes the running ones, then closes. ``drain()`` does the same but stays connected
/// (an operator takes the worker out of service without stopping it). A lost scheduler
/// connection is retried with backoff. Every action is a child task of its session, and every
/// session a child of `run()`, so the thread pool is shut down only after the last action that
/// could use it has ended.
public final class Worker: Service {
  let config: WorkerConfig
  let logger: Logger
  public let id: String
  private let drainSignal = DrainSignal()
  /// The current session, for ``status``.
  private let live = Mutex(Live())

  private struct Live {
    var actions: RunningActions?
    var shuttingDown = false
  }

  public init(config: WorkerConfig, logger: Logger) {
    self.config = config
    self.logger = logger
    var host = [CChar](repeating: 0, count: 256)
    gethostname(&host, host.count - 1)
    let hostName = String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    self.id = "\(hostName)-\(getpid())-\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
  }

  /// What the worker is doing now; cheap, callable from any thread.
  public var status: WorkerStatus {
    let (actions, shuttingDown) = live.withLock { ($0.actions, $0.shuttingDown) }
    return WorkerStatus(
      id: id, scheduler: config.scheduler, registered: actions != nil, slots: config.maxConcurrentActions,
      busy: actions?.count ?? 0, draining: shuttingDown || drainSignal.isTriggered)
  }

  /// Stops taking actions: tells the scheduler `going_away`, hands back any that still
  /// arrive, lets the running ones finish, and stays connected (and running) until shut down.
  public func drain() {
    if drainSignal.trigger() {
      logger.notice("draining: taking no new actions", metadata: ["worker": "\(id)"])
    }
  }

  public func run() async throws {
    let pool = NIOThreadPool(numberOfThreads: config.maxConcurrentActions + 2)
    pool.start()
    let outcome: Result<Void, any Error>
    do {
      try await serve(pool)
      outcome = .success(())
    } catch {
      outcome = .failure(error)
    }
    // Nothing can still be queued: every task that used the pool was a child of serve().
    try? await pool.shutdownGracefully()
    try outcome.get()
  }

  /// Registers with the scheduler again and again until graceful shutdown or cancellation.
  private func serve(_ pool: NIOThreadPool) async throws {
    let properties = try await measureProperties(pool)
    try await pool.runIfActive { [config] in try FileIO.makeDirectories(config.workDirectory) }
    // A cache of CAS content: losing it in a crash costs refetches, never wrong inputs (the
    // start-up scan drops files whose size is wrong), so it skips fsync.
    let cache = try await FilesystemStore.open(
      root: config.cacheDirectory, maxBytes: config.cacheMaxBytes, name: "worker input cache",
      options: .init(sync: .none, content: .cas), fileMode: 0o444, pool: pool)
    var casOptions = try GRPCServerOptions.dialing(config.cas, tls: config.tls)
    var schedulerOptions = try GRPCServerOptions.dialing(config.scheduler, tls: config.tls)
    if let path = config.tokenFile {
      let metadata = try BearerToken.metadata(fromFile: path)
      casOptions.callMetadata = metadata
      schedulerOptions.callMetadata = metadata
    }
    let casClient = try GRPCClient(url: config.cas, options: casOptions, logger: logger)
    let schedulerClient = try GRPCClient(url: config.scheduler, options: schedulerOptions, logger: logger)
    let isolation = try ActionIsolation(config)
    var runner = ActionRunner(
      workerID: id, workRoot: config.workDirectory, entrypoint: config.entrypoint, cache: cache,
      pool: pool,
      stores: { instance in
        (GRPCStore(client: casClient, instanceName: instance, role: .cas),
         GRPCStore(client: casClient, instanceName: instance, role: .actionCache))
      },
      logger: logger)
    runner.isolation = isolation
    runner.metrics = WorkerMetrics(worker: id)

    var backoff = Duration.milliseconds(100)
    while !Task.isShuttingDownGracefully && !Task.isCancelled {
      do {
        try await session(schedulerClient, properties, runner)
        backoff = .milliseconds(100)
      } catch {
        if Task.isShuttingDownGracefully || Task.isCancelled { break }
        if let refusal = error as? RPCError, refusal.code == .permissionDenied || refusal.code == .unauthenticated {
          logger.error(
            "the scheduler refused this worker's credentials (see workers[].token_file and auth.schedulers); retrying",
            metadata: ["scheduler": "\(config.scheduler)", "error": "\(refusal)", "in": "\(backoff)"])
          let pause = backoff
          _ = try? await cancelWhenGracefulShutdown { try await Task.sleep(for: pause) }
          backoff = min(backoff * 2, .seconds(10))
          continue
        }
        // The first quick retries are routine (an in-process server still binding).
        let level: Logger.Level = backoff < .seconds(1) ? .debug : .warning
        logger.log(level: level, "scheduler connection failed; retrying", metadata: ["error": "\(error)", "in": "\(backoff)"])
      }
      let pause = backoff
      _ = try? await cancelWhenGracefulShutdown { try await Task.sleep(for: pause) }
      backoff = min(backoff * 2, .seconds(10))
    }
    await casClient.close()
    await schedulerClient.close()
  }

  /// One registration: lasts until the stream fails or the worker has drained. Keep-alives,
  /// the shutdown watcher and every running action are children of this session.
  private func session(_ client: GRPCClient, _ properties: [Platform.Property], _ runner: ActionRunner) async throws {
    let call = try await client.call("/apus.worker.v1.WorkerAPI/Connect")
    // However this session ends, its stream ends too: a stream left open would keep the
    // scheduler's registration alive and refuse the next one as ALREADY_EXISTS.
    defer { call.cancelCall() }
    var register = WorkerRegister()
    register.workerID = id
    register.properties = properties
    register.maxConcurrentActions = Int32(config.maxConcurrentActions)
    var hello = WorkerMessage()
    hello.register = register
    try await call.requests.write(hello.serializedBytes())
    var responses = call.responses.makeAsyncIterator()
    guard let first = try await responses.next(),
      let registered = try SchedulerMessage(serializedBytes: first).registered
    else {
      throw RPCError(.internal, "the scheduler did not acknowledge registration")
    }
    logger.info("registered with scheduler", metadata: ["worker": "\(id)", "scheduler": "\(config.scheduler)"])
    let keepAlive = Duration.seconds(max(1, Int(registered.keepAliveSeconds)))
    let actions = RunningActions()
    live.withLock { $0.actions = actions }
    defer { live.withLock { $0.actions = nil } }

    try await withThrowingDiscardingTaskGroup { group in
      group.addTask {
        var ping = WorkerMessage()
        ping.keepAlive = EmptyMessage()
        let bytes = ping.serializedBytes()
        do {
          while true {
            try await Task.sleep(for: keepAlive)
            try await call.requests.write(bytes)
          }
        } catch is CancellationError {
          return
        } catch {
          call.cancelCall()  // ends the read loop below too
          throw error
        }
      }
      group.addTask { try await self.watchForDrain(call, actions) }
      while let bytes = try await responses.next() {
        let message = try SchedulerMessage(serializedBytes: bytes)
        if let start = message.start {
          if let killed = actions.admit(start.operationName) {
            group.addTask { await self.run(start, runner, call, actions, killed: killed) }
          } else {
            var finished = ActionFinished()
            finished.operationName = start.operationName
            finished.handedBack = true
            var reply = WorkerMessage()
            reply.finished = finished
            try await call.requests.write(reply.serializedBytes())
          }
        }
        if let kill = message.kill { actions.kill(kill.operationName) }
      }
      // The scheduler ended the stream (after our drain, or it went away): anything still
      // running is its to requeue, so stop it.
      group.cancelAll()
    }
  }

  /// Waits for graceful shutdown or ``drain()``; either way says `going_away` and takes no
  /// more actions. On shutdown the stream is closed once nothing runs; after a drain it stays
  /// open until shutdown. Returns when the session ends first.
  private func watchForDrain(_ call: ClientCall, _ actions: RunningActions) async throws {
    enum Stop: Sendable { case shutdown, drain, sessionEnded }
    let drainSignal = self.drainSignal
    let stop = await withTaskGroup(of: Stop.self) { group in
      group.addTask {
        do { try await gracefulShutdown() } catch { return .sessionEnded }
        return .shutdown
      }
      group.addTask {
        await drainSignal.wait()
        return Task.isCancelled ? .sessionEnded : .drain
      }
      let first = await group.next() ?? .sessionEnded
      group.cancelAll()
      return first
    }
    guard stop != .sessionEnded else { return }
    // From here on, what arrives is handed back; the stream stays open until going_away is out.
    _ = actions.beginDraining(close: false)
    var goingAway = WorkerMessage()
    goingAway.goingAway = EmptyMessage()
    try? await call.requests.write(goingAway.serializedBytes())
    if stop == .drain {
      do { try await gracefulShutdown() } catch { return }
    }
    live.withLock { $0.shuttingDown = true }
    if actions.beginDraining(close: true) { call.finishRequests() }
  }

  /// Runs one action until it ends or the scheduler kills it, then reports the result.
  private func run(
    _ start: StartAction, _ runner: ActionRunner, _ call: ClientCall, _ actions: RunningActions,
    killed: AsyncStream<Void>
  ) async {
    let (response, wasKilled) = await withTaskGroup(of: ExecuteResponse?.self) { group in
      group.addTask { await runner.run(start) }
      group.addTask {
        for await _ in killed {}
        return nil
      }
      var response: ExecuteResponse?
      var wasKilled = false
      while let next = await group.next() {
        if let next { response = next } else if response == nil { wasKilled = true }
        group.cancelAll()
      }
      return (response ?? ExecuteResponse(), wasKilled)
    }
    runner.metrics?.record(response, killed: wasKilled)
    var finished = ActionFinished()
    finished.operationName = start.operationName
    finished.response = response
    var message = WorkerMessage()
    message.finished = finished
    try? await call.requests.write(message.serializedBytes())
    if actions.finish(start.operationName) { call.finishRequests() }
  }

  /// Configured properties plus those measured by commands (e.g. `nproc` for cpu_count).
  private func measureProperties(_ pool: NIOThreadPool) async throws -> [Platform.Property] {
    var values = config.platform
    for (name, command) in config.platformCommands where values[name] == nil {
      let output = try await pool.runIfActive { try Self.capture(command) }
      values[name] = output.trimmingCharacters(in: .whitespacesAndNewlines)
    }
    return values.sorted { $0.key < $1.key }.map { name, value in
      var p = Platform.Property()
      p.name = name
      p.value = value
      return p
    }
  }

  /// Runs a short command and returns its standard output.
  static func capture(_ command: [String]) throws -> String {
    var fds: [Int32] = [0, 0]
    guard pipe(&fds) == 0 else { throw ExecutionFailure(.internal, "pipe: \(FileIO.errorText())") }
    var pid: pid_t = 0
    let path = command[0].contains("/") ? command[0] : (["/usr/bin/", "/bin/", "/usr/local/bin/"].map { $0 + command[0] }.first { access($0, X_OK) == 0 } ?? command[0])
    let devnull = open("/dev/null", O_WRONLY | O_CLOEXEC)
    let rc = withCStrings(command) { argv in
      withCStrings(["PATH=/usr/local/bin:/usr/bin:/bin"]) { envp in
        apusSpawn(path, argv, envp, "/", fds[1], devnull, &pid)
      }
    }
    close(fds[1])
    close(devnull)
    defer { close(fds[0]) }
    guard rc == 0 else { throw ExecutionFailure(.internal, "cannot run \(command[0]): \(String(cString: strerror(rc)))") }
    var output: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
      let n = buffer.withUnsafeMutableBytes { read(fds[0], $0.baseAddress, $0.count) }
      if n <= 0 { break }
      output += buffer[0..<n]
    }
    var status: Int32 = 0
    waitpid(pid, &status, 0)
    return String(decoding: output, as: UTF8.self)
  }
}
