import ApusProto

/// The one error type of the storage layer: a gRPC status code and a message meant for the
/// client. Services turn it into a call's status in one place (ApusServices' ErrorMapping).
public struct StoreError: Error, Sendable, Equatable, CustomStringConvertible {
  /// Store errors use the codebase's one status vocabulary.
  public typealias Code = RPCStatusCode

  public var code: RPCStatusCode
  public var message: String

  public init(_ code: RPCStatusCode, _ message: String) {
    self.code = code
    self.message = message
  }

  public var description: String { "\(code): \(message)" }
}
