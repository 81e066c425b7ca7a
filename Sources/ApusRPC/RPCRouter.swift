/// Maps `/package.Service/Method` paths to handlers. Built once, then read-only.
public struct RPCRouter: Sendable {
  /// A registered method.
  public struct Route: Sendable {
    public var handler: RPCHandler
    /// The call lasts as long as the work it follows (Execute, the worker stream), so a
    /// listener's default deadline does not apply to it.
    public var longLived: Bool
    /// Answers a unary call on the event loop when it can do so without waiting; the
    /// connection falls back to `handler` when it returns nil (or is absent).
    public var immediate: RPCImmediateHandler?
    let metrics: MethodMetrics
  }

  private var handlers: [String: Route] = [:]

  public init() {}

  /// `immediate`, for unary methods only, answers without a task when the answer is at
  /// hand; it must behave as `handler` would for the same request.
  public mutating func register(
    _ path: String, longLived: Bool = false, immediate: RPCImmediateHandler? = nil,
    _ handler: @escaping RPCHandler
  ) {
    precondition(handlers[path] == nil, "\(path) registered twice")
    handlers[path] = Route(
      handler: handler, longLived: longLived, immediate: immediate,
      metrics: MethodMetrics(path: path, longLived: longLived))
  }

  public func route(for path: String) -> Route? { handlers[path] }

  public func handler(for path: String) -> RPCHandler? { handlers[path]?.handler }

  public var paths: [String] { handlers.keys.sorted() }
}
