/// The one error type of the gRPC layer: a status code, a message for humans, and optional
/// rich details (a serialized `google.rpc.Status`, sent as `grpc-status-details-bin`).
///
/// Other layers convert their errors into this through ``RPCErrorConvertible``; anything
/// else that escapes a handler becomes `UNKNOWN`.
public struct RPCError: Error, Sendable, Equatable, CustomStringConvertible {
  public var code: RPCStatusCode
  public var message: String
  public var statusDetails: [UInt8]?

  public init(_ code: RPCStatusCode, _ message: String, statusDetails: [UInt8]? = nil) {
    self.code = code
    self.message = message
    self.statusDetails = statusDetails
  }

  public var description: String { "\(code): \(message)" }
}

/// An error that knows which gRPC status describes it.
public protocol RPCErrorConvertible: Error {
  var rpcError: RPCError { get }
}

extension RPCError {
  /// The status to send for any error thrown by a handler.
  public init(from error: any Error) {
    switch error {
    case let error as RPCError: self = error
    case let error as any RPCErrorConvertible: self = error.rpcError
    case is CancellationError: self = RPCError(.cancelled, "the call was cancelled")
    default: self = RPCError(.unknown, String(describing: error))
    }
  }
}
