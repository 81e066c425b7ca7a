import ApusProto
import ApusStore
import Logging
import NIOPosix
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// Runs one action from start to ExecuteResponse: Command, inputs, process, outputs, AC.
struct ActionRunner: Sendable {
  let workerID: String
  let workRoot: String
  let entrypoint: [String]
  let cache: FilesystemStore
  let pool: NIOThreadPool
  let stores: @Sendable (String) -> (cas: any BlobStore, actionCache: any BlobStore)
  var isolation: ActionIsolation = .none
  let logger: Logger
  /// The worker's metrics; nil in tests that run actions without a worker.
  var metrics: WorkerMetrics? = nil
  private static let counter = Atomic<UInt64>(0)

  func run(_ start: StartAction) async -> ExecuteResponse {
    var metadata = ExecutedActionMetadata()
    metadata.worker = workerID
    metadata.queuedTimestamp = start.queued
    metadata.workerStartTimestamp = .now()
    let n = Self.counter.wrappingAdd(1, ordering: .relaxed).newValue
    let directory = "\(workRoot)/\(getpid())-\(n)"
    var response = ExecuteResponse()
    do {
      response = try await execute(start, in: directory, metadata: &metadata)
    } catch let failure as ExecutionFailure {
      response.status = failure.status
    } catch is CancellationError {
      response.status = RPCStatusMessage(.cancelled, "the action was cancelled")
    } catch {
      response.status = RPCStatusMessage(.unavailable, "worker \(workerID) failed: \(error)")
    }
    await removeEvenIfCancelled(directory)
    return response
  }

  /// Removes the action's directory on the pool. `runIfActive` refuses work from a cancelled
  /// task, and a killed action must not leave its directory (and disk) behind.
  private func removeEvenIfCancelled(_ directory: String) async {
    await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
      pool.submit { _ in
        FileIO.removeTree(directory)
        done.resume()
      }
    }
  }

  private func execute(
    _ start: StartAction, in directory: String, metadata: inout ExecutedActionMetadata
  ) async throws -> ExecuteResponse {
    guard let action = start.action, let actionDigest = start.actionDigest?.validated,
      let commandDigest = action.commandDigest?.validated,
      let inputRoot = action.inputRootDigest?.validated
    else {
      throw ExecutionFailure(.invalidArgument, "StartAction without a valid action")
    }
    let (cas, actionCache) = stores(start.instanceName)
    metadata.inputFetchStartTimestamp = .now()
    let fetchStarted = ContinuousClock.now
    guard let commandBytes = try await cas.readAll(commandDigest, maxBytes: 4 << 20) else {
      throw ExecutionFailure(status: .missingBlobs([commandDigest], "the Command is missing from the CAS"))
    }
    let command: Command
    do {
      command = try Command(serializedBytes: commandBytes)
    } catch {
      throw ExecutionFailure(.invalidArgument, "command \(commandDigest) is not a valid Command")
    }
    let inputs = "\(directory)/root"
    try await pool.runIfActive { try FileIO.makeDirectories(inputs) }
    try await InputMaterializer(remote: cas, cache: cache, pool: pool, metrics: metrics)
      .materialize(root: inputRoot, into: inputs)
    if !command.workingDirectory.isEmpty { try OutputCollector.checkRelative(command.workingDirectory) }
    let workingDirectory = command.workingDirectory.isEmpty ? inputs : "\(inputs)/\(command.workingDirectory)"
    let outputs = command.outputPaths.isEmpty ? command.outputFiles + command.outputDirectories : command.outputPaths
    try await pool.runIfActive {
      try FileIO.makeDirectories(workingDirectory)
      for path in outputs {
        try OutputCollector.checkRelative(path)
        let parent = path.split(separator: "/").dropLast().joined(separator: "/")
        if !parent.isEmpty { try FileIO.makeDirectories("\(workingDirectory)/\(parent)") }
      }
      for path in command.outputDirectories { try FileIO.makeDirectories("\(workingDirectory)/\(path)") }
    }
    let properties = (command.platform?.properties ?? []) + (action.platform?.properties ?? [])
    let blockNetwork = properties.contains { $0.name == "block-network" && $0.value != "false" }
    if blockNetwork && !isolation.workerIsRoot {
      throw ExecutionFailure(
        .failedPrecondition, "worker \(workerID) cannot honour block-network: network namespaces need it to run as root")
    }
    if let uid = isolation.uid, let gid = isolation.gid {
      // The action's user owns the directories (to create outputs); input files stay the
      // worker's and read-only.
      try await pool.runIfActive { try FileIO.chownDirectories(directory, uid: uid, gid: gid) }
    }
    metadata.inputFetchCompletedTimestamp = .now()
    metrics?.inputFetchSeconds.record(duration: .now - fetchStarted)

    let timeout = start.timeout.map { Duration.seconds($0.seconds) + .nanoseconds(Int64($0.nanos)) } ?? .seconds(900)
    metadata.executionStartTimestamp = .now()
    let outcome = try await ProcessRunner(pool: pool).run(
      arguments: entrypoint + command.arguments,
      environment: command.environmentVariables.map { ($0.name, $0.value) },
      directory: workingDirectory, stdoutPath: "\(directory)/stdout", stderrPath: "\(directory)/stderr",
      timeout: timeout, isolation: isolation, blockNetwork: blockNetwork)
    metadata.executionCompletedTimestamp = .now()

    metadata.outputUploadStartTimestamp = .now()
    let uploadStarted = ContinuousClock.now
    var result = ActionResult()
    result.exitCode = outcome.exitCode
    let collector = OutputCollector(remote: cas, pool: pool, metrics: metrics)
    var uploads = OutputCollector.Uploads()
    if !outcome.timedOut {
      try await collector.collect(command: command, workingDirectory: workingDirectory, into: &result, uploads: &uploads)
    }
    for (name, path) in [("stdout", "\(directory)/stdout"), ("stderr", "\(directory)/stderr")] {
      let digest = try await collector.hashForUpload(path, &uploads)
      if name == "stdout" { result.stdoutDigest = digest.proto } else { result.stderrDigest = digest.proto }
    }
    try await collector.upload(uploads)
    metadata.outputUploadCompletedTimestamp = .now()
    metrics?.outputUploadSeconds.record(duration: .now - uploadStarted)
    metadata.workerCompletedTimestamp = .now()
    result.executionMetadata = metadata

    var response = ExecuteResponse()
    response.result = result
    if outcome.timedOut {
      response.status = RPCStatusMessage(
        .deadlineExceeded, "the action ran past its timeout of \(timeout) and was killed")
    } else {
      response.status = RPCStatusMessage()
      if outcome.exitCode == 0 && !action.doNotCache {
        try await actionCache.writeAll(actionDigest, result.serializedBytes())
      }
    }
    return response
  }
}

extension Timestamp {
  static func now() -> Timestamp {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    var t = Timestamp()
    t.seconds = Int64(ts.tv_sec)
    t.nanos = Int32(ts.tv_nsec)
    return t
  }
}
