import ApusProto
import ApusRPC
import ApusScheduler
import ApusStore

/// `build.bazel.remote.execution.v2.Execution` and the `google.longrunning.Operations`
/// calls a client needs to list, look up, wait for, cancel or delete operations.
struct ExecutionService {
  let table: InstanceTable
  static let prefix = "/build.bazel.remote.execution.v2.Execution/"
  static let operations = "/google.longrunning.Operations/"
  static let maxActionBytes = 4 << 20
  /// ListOperations' page size when the request sets none, and the most it may ask for.
  static let defaultPageSize = 100, maxPageSize = 1000

  func register(on router: inout RPCRouter) {
    let table = self.table
    router.serverStreaming(
      Self.prefix + "Execute", ExecuteRequest.self, longLived: true, auth: table.authorizer,
      instance: { $0.instanceName }
    ) { request, writer, _ in
      try await Self.execute(table, request, writer)
    }
    router.serverStreaming(
      Self.prefix + "WaitExecution", WaitExecutionRequest.self, longLived: true, auth: table.authorizer,
      instance: { await Self.instanceName(table, $0.name) }
    ) { request, writer, _ in
      guard let stream = try await Self.watch(table, request.name) else {
        throw RPCError(.notFound, "no operation named \"\(request.name)\"")
      }
      for await op in stream { try await writer.write(op.serializedBytes()) }
    }
    router.unary(
      Self.operations + "GetOperation", GetOperationRequest.self, auth: table.authorizer,
      instance: { await Self.instanceName(table, $0.name) }
    ) { request, _ in
      for scheduler in table.schedulers {
        if let op = try await scheduler.operation(request.name) { return op.serializedBytes() }
      }
      throw RPCError(.notFound, "no operation named \"\(request.name)\"")
    }
    router.unary(
      Self.operations + "WaitOperation", WaitOperationRequest.self, longLived: true, auth: table.authorizer,
      instance: { await Self.instanceName(table, $0.name) }
    ) { request, _ in
      guard let stream = try await Self.watch(table, request.name) else {
        throw RPCError(.notFound, "no operation named \"\(request.name)\"")
      }
      var last: Operation?
      for await op in stream { last = op }
      return (last ?? Operation()).serializedBytes()
    }
    router.unary(
      Self.operations + "CancelOperation", CancelOperationRequest.self, auth: table.authorizer,
      instance: { await Self.instanceName(table, $0.name) }
    ) { request, _ in
      for scheduler in table.schedulers where try await scheduler.cancel(request.name) {
        return EmptyMessage().serializedBytes()
      }
      throw RPCError(.notFound, "no operation named \"\(request.name)\"")
    }
    router.unary(
      Self.operations + "ListOperations", ListOperationsRequest.self, auth: table.authorizer,
      instance: { $0.name }
    ) { request, _ in
      try await Self.list(table, request).serializedBytes()
    }
    router.unary(
      Self.operations + "DeleteOperation", DeleteOperationRequest.self, auth: table.authorizer,
      instance: { await Self.instanceName(table, $0.name) }
    ) { request, _ in
      for scheduler in table.schedulers where try await scheduler.instanceName(ofOperation: request.name) != nil {
        try await scheduler.deleteOperation(request.name)
        return EmptyMessage().serializedBytes()
      }
      throw RPCError(.notFound, "no operation named \"\(request.name)\"")
    }
  }

  /// ListOperations: `name` is the instance name; `filter` must be empty (none is
  /// supported); pages follow creation order, the token being the last one's sequence.
  static func list(_ table: InstanceTable, _ request: ListOperationsRequest) async throws -> ListOperationsResponse {
    guard request.filter.isEmpty else {
      throw RPCError.invalidArgument("ListOperations filters are not supported; send an empty filter")
    }
    guard request.pageSize >= 0 else {
      throw RPCError.invalidArgument("page_size must not be negative, got \(request.pageSize)")
    }
    var after: UInt64?
    if !request.pageToken.isEmpty {
      guard let token = UInt64(request.pageToken) else {
        throw RPCError.invalidArgument("page_token \"\(request.pageToken)\" was not returned by ListOperations")
      }
      after = token
    }
    let instance = try table.instance(request.name)
    var response = ListOperationsResponse()
    guard let scheduler = instance.scheduler else { return response }
    let size = request.pageSize == 0 ? defaultPageSize : min(Int(request.pageSize), maxPageSize)
    let page = try await scheduler.listOperations(instance: request.name, pageSize: size, after: after)
    response.operations = page.operations
    response.nextPageToken = page.next.map { String($0) } ?? ""
    return response
  }

  /// The instance an operation was started on; nil if no scheduler knows it (or the one
  /// that might cannot be asked now: the call then goes on to fail with its reason).
  static func instanceName(_ table: InstanceTable, _ operation: String) async -> String? {
    for scheduler in table.schedulers {
      if let name = try? await scheduler.instanceName(ofOperation: operation) { return name }
    }
    return nil
  }

  static func watch(_ table: InstanceTable, _ name: String) async throws -> AsyncStream<Operation>? {
    for scheduler in table.schedulers {
      if let stream = try await scheduler.watch(name) { return stream }
    }
    return nil
  }

  static func execute(
    _ table: InstanceTable, _ request: ExecuteRequest, _ writer: RPCMessageWriter
  ) async throws {
    try DigestCheck.checkFunction(request.digestFunction)
    let instance = try table.instance(request.instanceName)
    guard let scheduler = instance.scheduler, let cas = instance.cas, let ac = instance.actionCache else {
      throw RPCError(.unimplemented, "instance \"\(request.instanceName)\" does not execute actions")
    }
    let actionDigest = try DigestCheck.validate(request.actionDigest, "action_digest")
    guard let actionBytes = try await cas.readAll(actionDigest, maxBytes: maxActionBytes) else {
      throw missing([actionDigest], "the Action is not in the CAS")
    }
    let action: Action
    do {
      action = try Action(serializedBytes: actionBytes)
    } catch {
      throw RPCError.invalidArgument("action \(actionDigest) is not a valid Action: \(error)")
    }
    let commandDigest = try DigestCheck.validate(action.commandDigest, "action.command_digest")
    _ = try DigestCheck.validate(action.inputRootDigest, "action.input_root_digest")
    var platform = action.platform?.properties ?? []
    if platform.isEmpty {
      guard let commandBytes = try await cas.readAll(commandDigest, maxBytes: maxActionBytes) else {
        throw missing([commandDigest], "the Command is not in the CAS")
      }
      do {
        platform = try Command(serializedBytes: commandBytes).platform?.properties ?? []
      } catch {
        throw RPCError.invalidArgument("command \(commandDigest) is not a valid Command: \(error)")
      }
    }
    let job = ExecutionJob(
      instanceName: request.instanceName, actionDigest: actionDigest, action: action,
      platform: platform, priority: request.executionPolicy?.priority ?? 0,
      mergeable: !action.doNotCache)
    _ = try scheduler.effectiveTimeout(action)

    if !request.skipCacheLookup && !action.doNotCache,
      let cached = try await ac.readAll(actionDigest, maxBytes: table.maxMessageBytes),
      let result = try? ActionResult(serializedBytes: cached)
    {
      var response = ExecuteResponse()
      response.result = result
      response.cachedResult = true
      response.status = .ok
      ActionCacheLookups.shared.counts(request.instanceName).record(hit: true)
      try await writer.write(try await scheduler.recordCompleted(job, response).serializedBytes())
      return
    }

    let name = try await scheduler.submit(job)
    guard let watch = try await scheduler.subscribe(name) else {
      throw RPCError(.internal, "operation \(name) vanished")
    }
    // A client that drops its stream (cancelled call, failed write) leaves no watcher in
    // the queued operation.
    do {
      for await op in watch.stream { try await writer.write(op.serializedBytes()) }
    } catch {
      await scheduler.unsubscribe(name, watch.id)
      throw error
    }
    await scheduler.unsubscribe(name, watch.id)
  }

  static func missing(_ digests: [BlobDigest], _ message: String) -> RPCError {
    let status = RPCStatusMessage.missingBlobs(digests, message)
    return RPCError(.failedPrecondition, message, statusDetails: status.serializedBytes())
  }
}
