/// The one error type of the storage layer. Services map `code` to a gRPC status in one
/// place; the message is meant for the client.
public struct StoreError: Error, Sendable, Equatable, CustomStringConvertible {
  public struct Code: Hashable, Sendable {
    let name: String
    public static let notFound = Code(name: "not found")
    public static let invalidArgument = Code(name: "invalid argument")
    public static let resourceExhausted = Code(name: "resource exhausted")
    public static let unavailable = Code(name: "unavailable")
    public static let dataLoss = Code(name: "data loss")
    public static let `internal` = Code(name: "internal")
  }

  public var code: Code
  public var message: String

  public init(_ code: Code, _ message: String) {
    self.code = code
    self.message = message
  }

  public var description: String { "\(code.name): \(message)" }
}
