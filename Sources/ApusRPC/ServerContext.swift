import NIOCore

/// What a handler knows about its call besides the messages.
public struct ServerContext: Sendable {
  /// `/package.Service/Method`.
  public var path: String
  /// Request headers, pseudo-headers and gRPC reserved headers removed.
  public var metadata: Metadata
  /// From `grpc-timeout` (or the listener's default); `nil` means none. Also the task's
  /// `CallDeadline.current`.
  public var deadline: NIODeadline?
  /// The remote address, for logs.
  public var peer: String
  /// The names of the peer's verified client certificate (mTLS); nil without one.
  public var clientCertificate: ClientCertificateNames?

  public init(
    path: String, metadata: Metadata, deadline: NIODeadline?, peer: String,
    clientCertificate: ClientCertificateNames? = nil
  ) {
    self.path = path
    self.metadata = metadata
    self.deadline = deadline
    self.peer = peer
    self.clientCertificate = clientCertificate
  }
}

/// A handler for one method. It reads request messages from `requests`, writes response
/// messages to `responses`, and returns normally for status OK or throws for any other
/// status (see ``RPCError``). Unary, server-, client- and bidi-streaming are all this shape.
public typealias RPCHandler =
  @Sendable (RPCMessageStream, RPCMessageWriter, ServerContext) async throws -> Void

/// The synchronous fast path of a unary method: the response message for the request
/// message, computed on the event loop without waiting (a memory store hit), or nil when
/// the answer needs I/O and the call must go to the route's ``RPCHandler``. Throws for a
/// status other than OK, as a handler does.
public typealias RPCImmediateHandler =
  @Sendable (_ request: [UInt8], ServerContext) throws -> [UInt8]?
