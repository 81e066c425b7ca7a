import ApusProto
import ApusRPC
import ApusScheduler
import ApusStore

// The one place where lower layers' errors become gRPC statuses. Every layer already speaks
// `RPCStatusCode`, so each mapping keeps the code and the message as they are.

extension StoreError: RPCErrorConvertible {
  public var rpcError: RPCError { RPCError(code, message) }
}

extension SchedulerError: RPCErrorConvertible {
  public var rpcError: RPCError { RPCError(code, message) }
}

extension ProtoDecodingError: RPCErrorConvertible {
  /// gRPC libraries answer an unparseable request with INTERNAL.
  public var rpcError: RPCError { RPCError(.internal, "invalid request message: \(message)") }
}

extension RPCError {
  static func invalidArgument(_ message: String) -> RPCError { RPCError(.invalidArgument, message) }

  /// The `google.rpc.Status` of this error, for per-blob statuses in batch responses.
  var statusMessage: RPCStatusMessage {
    var s = RPCStatusMessage()
    s.code = code.rawValue
    s.message = message
    return s
  }
}

extension RPCStatusMessage {
  static let ok = RPCStatusMessage()
}
