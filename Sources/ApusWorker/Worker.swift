import ApusConfig
import ApusProto
import ApusRPC
import ApusStore
import Logging
import NIOPosix
import ServiceLifecycle
import Synchronization
import UnixSignals

#if canImport(Glibc)
  import Glibc
#endif

/// A worker: registers with a scheduler over the WorkerAPI stream, runs the actions it is
/// given (up to `max_concurrent_actions` at once) and reports their results.
///
/// Several schedulers may be configured: when the stream breaks or cannot be opened, the
/// worker tries the next endpoint after a jittered exponential backoff (capped at 5 s).
/// Running actions outlive a broken stream; results that could not be sent are kept
/// (``ResultMailbox``) and sent right after the next registration, which lists the
/// operations still running here. On graceful shutdown it says `going_away`, takes no new
/// actions (any that arrive are handed back), finishes the running ones and reports them,
/// then closes. ``drain()`` does the same but stays connected. Credentials are read again on
/// SIGHUP or when their files change. Every action is a child task of `run()`, so the thread
/// pool is shut down only after the last action that could use it has ended.
public final class Worker: Service {
  let config: WorkerConfig
  let logger: Logger
  public let id: String
  private let drainSignal = DrainSignal()
  private let actions = RunningActions()
  private let mailbox = ResultMailbox()
  /// The current session, for ``status``.
  private let live: Mutex<Live>

  private struct Live {
    var endpoint: String
    var registered = false
    var shuttingDown = false
    /// This session's stream was half-closed by us: shut down with everything reported.
    var closedByUs = false
  }

  public init(config: WorkerConfig, logger: Logger) {
    self.config = config
    self.logger = logger
    var host = [CChar](repeating: 0, count: 256)
    gethostname(&host, host.count - 1)
    let hostName = String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    self.id = "\(hostName)-\(getpid())-\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
    live = Mutex(Live(endpoint: config.schedulers.first ?? ""))
  }

  /// What the worker is doing now; cheap, callable from any thread.
  public var status: WorkerStatus {
    let (endpoint, registered, shuttingDown) = live.withLock { ($0.endpoint, $0.registered, $0.shuttingDown) }
    return WorkerStatus(
      id: id, scheduler: endpoint, registered: registered, slots: config.maxConcurrentActions,
      busy: actions.count, draining: shuttingDown || drainSignal.isTriggered)
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

  /// Sets up the cache, credentials and CAS client, then keeps a scheduler session going
  /// until graceful shutdown (and nothing left to report) or cancellation.
  private func serve(_ pool: NIOThreadPool) async throws {
    let properties = try await measureProperties(pool)
    try await pool.runIfActive { [config] in try FileIO.makeDirectories(config.workDirectory) }
    // A cache of CAS content: losing it in a crash costs refetches, never wrong inputs (the
    // start-up scan drops files whose size is wrong), so it skips fsync.
    let cache = try await FilesystemStore.open(
      root: config.cacheDirectory, maxBytes: config.cacheMaxBytes, name: "worker input cache",
      options: .init(sync: .none, content: .cas), fileMode: 0o444, pool: pool)
    let credentials = try WorkerCredentials(config)
    let casClient = try GRPCClient(url: config.cas, options: credentials.options(for: config.cas), logger: logger)
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

    // Actions are children of this group, not of a session, so they outlive a broken stream.
    try await withThrowingDiscardingTaskGroup { work in
      work.addTask { await self.watchCredentials(credentials, cas: casClient) }
      try await self.sessions(pool, credentials, properties, runner, &work)
      work.cancelAll()
    }
    await casClient.close()
  }

  /// Registers again and again, moving through the scheduler endpoints, until graceful
  /// shutdown with nothing left to report, or cancellation.
  private func sessions(
    _ pool: NIOThreadPool, _ credentials: WorkerCredentials, _ properties: [Platform.Property],
    _ runner: ActionRunner, _ work: inout ThrowingDiscardingTaskGroup<any Error>
  ) async throws {
    var rotation = EndpointRotation(urls: config.schedulers)
    var backoff = ReconnectBackoff()
    var previous: SchedulerEndpoint?
    while !Task.isCancelled {
      if Task.isShuttingDownGracefully || drainSignal.isTriggered, actions.count == 0, mailbox.isEmpty {
        // Nothing to report: a drained worker stays off the scheduler until shutdown.
        if !Task.isShuttingDownGracefully { try? await gracefulShutdown() }
        return
      }
      if rotation.needsResolving {
        let urls = rotation.urls
        rotation.refill(try await pool.runIfActive { EndpointRotation(urls: urls).resolveAll() })
        guard !rotation.needsResolving else {
          throw ConfigError(path: "workers[].scheduler", "no usable scheduler url in \(urls)")
        }
      }
      guard let endpoint = rotation.current else { continue }
      if let previous, previous != endpoint {
        logger.notice(
          "switching scheduler", metadata: ["worker": "\(id)", "from": "\(previous)", "to": "\(endpoint)"])
      }
      previous = endpoint
      live.withLock { $0.endpoint = endpoint.description }
      let client = GRPCClient(
        host: endpoint.host, port: endpoint.port,
        options: credentials.options(for: endpoint.url, serverName: endpoint.serverName), logger: logger)
      var registered = false
      var failure: (any Error)?
      do {
        if try await session(client, endpoint, properties, runner, &work, registered: &registered) {
          await client.close()
          continue  // closed by us after shutdown, everything reported: the check above ends it
        }
      } catch {
        failure = error
      }
      await client.close()
      if registered {
        // Results written just before the break may have been lost with it.
        mailbox.streamBroke()
        backoff.reset()
      }
      if Task.isCancelled { return }
      if Task.isShuttingDownGracefully && !registered && actions.count == 0 {
        let owed = mailbox.names.count
        if owed > 0 {
          logger.warning(
            "shutting down without reaching a scheduler; it runs the unreported actions again",
            metadata: ["worker": "\(id)", "unreported": "\(owed)"])
        }
        return
      }
      let pause = backoff.next()
      if let refusal = failure as? RPCError, refusal.code == .permissionDenied || refusal.code == .unauthenticated {
        logger.error(
          "the scheduler refused this worker's credentials (see workers[].token_file and auth.schedulers); retrying",
          metadata: ["scheduler": "\(endpoint)", "error": "\(refusal)", "in": "\(pause)"])
      } else if let failure {
        // The first quick retries are routine (an in-process server still binding).
        let level: Logger.Level = backoff.isEarly && !registered ? .debug : .warning
        logger.log(
          level: level, "scheduler connection failed; retrying",
          metadata: ["scheduler": "\(endpoint)", "error": "\(failure)", "in": "\(pause)"])
      } else {
        logger.warning("the scheduler ended the stream; reconnecting", metadata: ["scheduler": "\(endpoint)", "in": "\(pause)"])
      }
      rotation.advance()
      if actions.count == 0 && mailbox.isEmpty {
        _ = try? await cancelWhenGracefulShutdown { try await Task.sleep(for: pause) }
      } else {
        // Shutdown does not cut the pause short: running actions still need a scheduler.
        try? await Task.sleep(for: pause)
      }
    }
  }

  /// One registration: lasts until the stream fails, the scheduler ends it, or the worker
  /// has shut down and reported everything (returns true then). Keep-alives, the result
  /// sender and the shutdown watcher are children of this session; actions are added to `work`.
  private func session(
    _ client: GRPCClient, _ endpoint: SchedulerEndpoint, _ properties: [Platform.Property], _ runner: ActionRunner,
    _ work: inout ThrowingDiscardingTaskGroup<any Error>, registered: inout Bool
  ) async throws -> Bool {
    let call = try await client.call("/apus.worker.v1.WorkerAPI/Connect")
    // However this session ends, its stream ends too: a stream left open would keep the
    // scheduler's registration alive and refuse the next one as ALREADY_EXISTS.
    defer { call.cancelCall() }
    var register = WorkerRegister()
    register.workerID = id
    register.properties = properties
    register.maxConcurrentActions = Int32(config.maxConcurrentActions)
    // Still ours: running here, or ended with the result following this message.
    let owed = mailbox.names
    register.runningOperations = actions.names.filter { !owed.contains($0) } + owed
    var hello = WorkerMessage()
    hello.register = register
    try await call.requests.write(hello.serializedBytes())
    var responses = call.responses.makeAsyncIterator()
    guard let first = try await responses.next(),
      let acknowledged = try SchedulerMessage(serializedBytes: first).registered
    else {
      throw RPCError(.internal, "the scheduler did not acknowledge registration")
    }
    registered = true
    runner.metrics?.registrations.increment()
    logger.info(
      "registered with scheduler",
      metadata: [
        "worker": "\(id)", "scheduler": "\(endpoint)", "running": "\(actions.count)", "unreported": "\(owed.count)",
      ])
    let keepAlive = Duration.seconds(max(1, Int(acknowledged.keepAliveSeconds)))
    live.withLock {
      $0.registered = true
      $0.closedByUs = false
    }
    defer { live.withLock { $0.registered = false } }

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
      group.addTask {
        if try await self.sendResults(call) { self.live.withLock { $0.closedByUs = true } }
      }
      group.addTask { try await self.watchForDrain(call) }
      while let bytes = try await responses.next() {
        let message = try SchedulerMessage(serializedBytes: bytes)
        if let start = message.start {
          // Ended here already, its result lost with a stream (the scheduler gave it back to
          // this worker)? Answer with the result rather than run it again.
          if let result = mailbox.result(for: start.operationName) {
            var reply = WorkerMessage()
            reply.finished = result
            try await call.requests.write(reply.serializedBytes())
          } else {
            switch actions.admit(start.operationName) {
            case .start(let killed):
              work.addTask { await self.run(start, runner, killed: killed) }
            case .alreadyRunning:
              break  // assigned again after a reconnect: the running copy reports
            case .refused:
              var finished = ActionFinished()
              finished.operationName = start.operationName
              finished.handedBack = true
              var reply = WorkerMessage()
              reply.finished = finished
              try await call.requests.write(reply.serializedBytes())
            }
          }
        }
        if let kill = message.kill { actions.kill(kill.operationName) }
      }
      group.cancelAll()
    }
    return live.withLock { $0.closedByUs }
  }

  /// Writes results as actions post them. Returns true after half-closing the stream: the
  /// worker is shutting down, nothing runs and everything is reported. A result whose write
  /// fails is kept for the next session.
  private func sendResults(_ call: ClientCall) async throws -> Bool {
    while true {
      let batch = await mailbox.next()
      if Task.isCancelled {
        mailbox.restore(batch)
        return false
      }
      for (i, finished) in batch.enumerated() {
        var message = WorkerMessage()
        message.finished = finished
        do {
          try await call.requests.write(message.serializedBytes())
          mailbox.sent(finished)
        } catch {
          mailbox.restore(Array(batch[i...]))
          call.cancelCall()
          throw error
        }
      }
      if live.withLock({ $0.shuttingDown }), actions.count == 0, mailbox.isEmpty {
        call.finishRequests()
        return true
      }
    }
  }

  /// Waits for graceful shutdown or ``drain()``; either way says `going_away` and takes no
  /// more actions (at once in a session that begins after them). After shutdown the result
  /// sender closes the stream once nothing runs and all is reported; after a drain the stream
  /// stays open until shutdown. Returns when the session ends first.
  private func watchForDrain(_ call: ClientCall) async throws {
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
    actions.beginDraining()
    var goingAway = WorkerMessage()
    goingAway.goingAway = EmptyMessage()
    try? await call.requests.write(goingAway.serializedBytes())
    if stop == .drain {
      do { try await gracefulShutdown() } catch { return }
    }
    live.withLock { $0.shuttingDown = true }
    mailbox.poke()
  }

  /// Runs one action until it ends or the scheduler kills it, then posts the result for
  /// whichever session is up.
  private func run(_ start: StartAction, _ runner: ActionRunner, killed: AsyncStream<Void>) async {
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
    // Untracked before posted: a session that sees neither sends its register without it,
    // and the result right after, which the scheduler accepts as a late one.
    actions.finish(start.operationName)
    if let dropped = mailbox.post(finished) {
      runner.metrics?.resultsDropped.increment()
      logger.warning(
        "too many unreported results; dropping the oldest (the scheduler runs it again)",
        metadata: ["worker": "\(id)", "operation": "\(dropped.operationName)"])
    }
  }

  /// Reads credentials again on SIGHUP, and when their files change (checked every 2 s),
  /// until cancelled. New connections use them: the CAS client's next one, the next session.
  private func watchCredentials(_ credentials: WorkerCredentials, cas: GRPCClient) async {
    let reload = { @Sendable (force: Bool) in
      do {
        guard try credentials.reload(force: force) else { return }
        cas.replaceOptions(credentials.options(for: self.config.cas))
        self.logger.notice("worker credentials loaded again; new connections use them", metadata: ["worker": "\(self.id)"])
      } catch {
        self.logger.warning(
          "worker credentials not reloaded; connections keep the previous ones",
          metadata: ["worker": "\(self.id)", "error": "\(error)"])
      }
    }
    await withDiscardingTaskGroup { group in
      group.addTask {
        // Trapped even with nothing to reload, so SIGHUP (systemd's ExecReload) never kills a worker.
        for await _ in await UnixSignalsSequence(trapping: .sighup) { reload(true) }
      }
      group.addTask {
        while true {
          do { try await Task.sleep(for: .seconds(2)) } catch { return }
          reload(false)
        }
      }
    }
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
