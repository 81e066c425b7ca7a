import ApusProto
import ApusRPC

/// Typed registration of protobuf methods on the untyped gRPC router.
extension RPCRouter {
  /// One request, one response.
  mutating func unary<Request: ProtoMessage>(
    _ path: String, _ : Request.Type, longLived: Bool = false,
    _ body: @escaping @Sendable (Request, ServerContext) async throws -> [UInt8]
  ) {
    register(path, longLived: longLived) { requests, responses, context in
      let request = try Request(serializedBytes: try await requests.single())
      try await responses.write(try await body(request, context))
    }
  }

  /// One request, a stream of responses written by `body`.
  mutating func serverStreaming<Request: ProtoMessage>(
    _ path: String, _ : Request.Type, longLived: Bool = false,
    _ body: @escaping @Sendable (Request, RPCMessageWriter, ServerContext) async throws -> Void
  ) {
    register(path, longLived: longLived) { requests, responses, context in
      let request = try Request(serializedBytes: try await requests.single())
      try await body(request, responses, context)
    }
  }
}
