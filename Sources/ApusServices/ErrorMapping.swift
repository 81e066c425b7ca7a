import ApusProto
import ApusRPC
import ApusStore

// The one place where lower layers' errors become gRPC statuses.

extension StoreError: RPCErrorConvertible {
  public var rpcError: RPCError {
    let code: RPCStatusCode =
      switch self.code {
      case .notFound: .notFound
      case .invalidArgument: .invalidArgument
      case .resourceExhausted: .resourceExhausted
      case .unavailable: .unavailable
      case .dataLoss: .dataLoss
      default: .internal
      }
    return RPCError(code, message)
  }
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
