import ApusProto

/// Why the scheduler refused a request: a gRPC status code (the codebase's one vocabulary)
/// and a message for the client. Services map it to the call's status in one place.
public struct SchedulerError: Error, Sendable, Equatable, CustomStringConvertible {
  public var code: RPCStatusCode
  public var message: String

  public init(_ code: RPCStatusCode, _ message: String) {
    self.code = code
    self.message = message
  }

  public var description: String { "\(code): \(message)" }
}
