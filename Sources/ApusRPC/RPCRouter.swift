/// Maps `/package.Service/Method` paths to handlers. Built once, then read-only.
public struct RPCRouter: Sendable {
  private var handlers: [String: RPCHandler] = [:]

  public init() {}

  public mutating func register(_ path: String, _ handler: @escaping RPCHandler) {
    precondition(handlers[path] == nil, "\(path) registered twice")
    handlers[path] = handler
  }

  public func handler(for path: String) -> RPCHandler? { handlers[path] }

  public var paths: [String] { handlers.keys.sorted() }
}
