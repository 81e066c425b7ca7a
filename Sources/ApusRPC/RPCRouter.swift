/// Maps `/package.Service/Method` paths to handlers. Built once, then read-only.
public struct RPCRouter: Sendable {
  /// A registered method.
  public struct Route: Sendable {
    public var handler: RPCHandler
    /// The call lasts as long as the work it follows (Execute, the worker stream), so a
    /// listener's default deadline does not apply to it.
    public var longLived: Bool
    let metrics: MethodMetrics
  }

  private var handlers: [String: Route] = [:]

  public init() {}

  public mutating func register(_ path: String, longLived: Bool = false, _ handler: @escaping RPCHandler) {
    precondition(handlers[path] == nil, "\(path) registered twice")
    handlers[path] = Route(handler: handler, longLived: longLived, metrics: MethodMetrics(path: path, longLived: longLived))
  }

  public func route(for path: String) -> Route? { handlers[path] }

  public func handler(for path: String) -> RPCHandler? { handlers[path]?.handler }

  public var paths: [String] { handlers.keys.sorted() }
}
