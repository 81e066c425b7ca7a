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
    /// `/package.Service/Method`, as registered.
    public let path: String
    let pathBytes: [UInt8]
  }

  private var handlers: [String: Route] = [:]
  /// The routes by a hash of their path's bytes, so a request's `:path` is routed without
  /// making a `String` of it.
  private var byPathHash: [UInt64: [Route]] = [:]

  public init() {}

  /// `immediate`, for unary methods only, answers without a task when the answer is at
  /// hand; it must behave as `handler` would for the same request.
  public mutating func register(
    _ path: String, longLived: Bool = false, immediate: RPCImmediateHandler? = nil,
    _ handler: @escaping RPCHandler
  ) {
    precondition(handlers[path] == nil, "\(path) registered twice")
    let route = Route(
      handler: handler, longLived: longLived, immediate: immediate,
      metrics: MethodMetrics(path: path, longLived: longLived), path: path,
      pathBytes: Array(path.utf8))
    handlers[path] = route
    byPathHash[Self.hash(route.pathBytes), default: []].append(route)
  }

  /// The route for a request's `:path` bytes.
  func route(forPath bytes: UnsafeRawBufferPointer) -> Route? {
    byPathHash[Self.hash(bytes)]?.first { $0.pathBytes.elementsEqual(bytes) }
  }

  /// FNV-1a: cheap for the short paths of gRPC methods; equal hashes are compared byte by byte.
  static func hash(_ bytes: some Sequence<UInt8>) -> UInt64 {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for b in bytes { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01b3 }
    return h
  }

  public func route(for path: String) -> Route? { handlers[path] }

  public func handler(for path: String) -> RPCHandler? { handlers[path]?.handler }

  public var paths: [String] { handlers.keys.sorted() }
}
