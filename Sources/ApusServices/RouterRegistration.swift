import ApusConfig
import ApusProto
import ApusRPC

/// The permission each method needs (see `Permission`). Every REAPI method is registered
/// through the helpers below, which look it up here and refuse to register a method that
/// is missing, so no service can forget the check.
enum MethodPermissions {
  static let table: [String: Permission] = [
    "/build.bazel.remote.execution.v2.Capabilities/GetCapabilities": .read,
    "/build.bazel.remote.execution.v2.ContentAddressableStorage/FindMissingBlobs": .read,
    "/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchReadBlobs": .read,
    "/build.bazel.remote.execution.v2.ContentAddressableStorage/GetTree": .read,
    "/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchUpdateBlobs": .write,
    "/google.bytestream.ByteStream/Read": .read,
    "/google.bytestream.ByteStream/QueryWriteStatus": .read,
    "/google.bytestream.ByteStream/Write": .write,
    "/build.bazel.remote.execution.v2.ActionCache/GetActionResult": .read,
    "/build.bazel.remote.execution.v2.ActionCache/UpdateActionResult": .writeAC,
    "/build.bazel.remote.execution.v2.Execution/Execute": .execute,
    "/build.bazel.remote.execution.v2.Execution/WaitExecution": .execute,
    "/google.longrunning.Operations/GetOperation": .execute,
    "/google.longrunning.Operations/WaitOperation": .execute,
    "/google.longrunning.Operations/CancelOperation": .execute,
    "/google.longrunning.Operations/ListOperations": .execute,
    "/google.longrunning.Operations/DeleteOperation": .execute,
  ]

  static func required(_ path: String) -> Permission {
    guard let permission = table[path] else {
      preconditionFailure("\(path) has no permission in MethodPermissions")
    }
    return permission
  }
}

/// The access check of one call: the caller, authenticated before any request is read, and
/// the permission its method needs. `check` runs once the instance is known, before any
/// store is touched. Without `auth`, everything passes.
struct CallAccess: Sendable {
  let authorizer: Authorizer?
  let principal: String?
  let permission: Permission

  init(_ authorizer: Authorizer?, _ path: String, _ context: ServerContext) async throws {
    self.authorizer = authorizer
    permission = MethodPermissions.required(path)
    principal = try await authorizer?.authenticate(context)
  }

  /// nil: the instance is unknown (an operation that does not exist or expired); then the
  /// permission on any instance will do, and the handler answers NOT_FOUND.
  func check(instance: String?) throws {
    guard let authorizer else { return }
    if let instance {
      try authorizer.authorize(principal, permission, instance: instance)
    } else {
      try authorizer.authorize(principal, permission, anyOf: Array(authorizer.config.instances.keys))
    }
  }
}

/// Typed registration of protobuf methods on the untyped gRPC router, with the access
/// check of `MethodPermissions` done before the handler runs.
extension RPCRouter {
  /// One request, one response; `instance` names the instance the access is checked on.
  /// `now`, when given, answers on the event loop if it can without waiting (nil: it
  /// cannot) and must answer as `body` would. With `auth` configured it is not used: the
  /// caller is authenticated by the handler task.
  mutating func unary<Request: ProtoMessage>(
    _ path: String, _ : Request.Type, longLived: Bool = false, auth: Authorizer?,
    instance: @escaping @Sendable (Request) async -> String?,
    now: (@Sendable (Request, ServerContext) throws -> [UInt8]?)? = nil,
    _ body: @escaping @Sendable (Request, ServerContext) async throws -> [UInt8]
  ) {
    var immediate: RPCImmediateHandler?
    if auth == nil, let now {
      immediate = { raw, context in try now(try Request(serializedBytes: raw), context) }
    }
    unaryWithBytes(
      path, Request.self, longLived: longLived, auth: auth, instance: instance,
      immediate: immediate
    ) { request, _, context in
      try await body(request, context)
    }
  }

  /// `unary`, the handler also getting the request's bytes as received.
  mutating func unaryWithBytes<Request: ProtoMessage>(
    _ path: String, _ : Request.Type, longLived: Bool = false, auth: Authorizer?,
    instance: @escaping @Sendable (Request) async -> String?,
    immediate: RPCImmediateHandler? = nil,
    _ body: @escaping @Sendable (Request, [UInt8], ServerContext) async throws -> [UInt8]
  ) {
    _ = MethodPermissions.required(path)
    register(path, longLived: longLived, immediate: immediate) { requests, responses, context in
      let access = try await CallAccess(auth, path, context)
      let raw = try await requests.single()
      let request = try Request(serializedBytes: raw)
      if auth != nil { try access.check(instance: await instance(request)) }
      try await responses.write(try await body(request, raw, context))
    }
  }

  /// One request, a stream of responses written by `body`.
  mutating func serverStreaming<Request: ProtoMessage>(
    _ path: String, _ : Request.Type, longLived: Bool = false, auth: Authorizer?,
    instance: @escaping @Sendable (Request) async -> String?,
    _ body: @escaping @Sendable (Request, RPCMessageWriter, ServerContext) async throws -> Void
  ) {
    _ = MethodPermissions.required(path)
    register(path, longLived: longLived) { requests, responses, context in
      let access = try await CallAccess(auth, path, context)
      let request = try Request(serializedBytes: try await requests.single())
      if auth != nil { try access.check(instance: await instance(request)) }
      try await body(request, responses, context)
    }
  }

  /// A stream of requests whose instance only the handler can tell (ByteStream Write): the
  /// caller is authenticated before the first message is read, and `body` must call
  /// `access.check(instance:)` before it touches a store.
  mutating func clientStreaming(
    _ path: String, auth: Authorizer?,
    _ body: @escaping @Sendable (RPCMessageStream, RPCMessageWriter, CallAccess) async throws -> Void
  ) {
    _ = MethodPermissions.required(path)
    register(path) { requests, responses, context in
      try await body(requests, responses, try await CallAccess(auth, path, context))
    }
  }
}
