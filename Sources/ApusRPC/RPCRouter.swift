#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#endif

/// Maps `/package.Service/Method` paths to handlers. Built once, then read-only.
public struct RPCRouter: Sendable {
  /// A registered method.
  /// A class, not a struct: every call holds its route from `:path` to its end, and a
  /// reference is one retain where a struct of closures, strings and arrays was five.
  public final class Route: Sendable {
    public let handler: RPCHandler
    /// The call lasts as long as the work it follows (Execute, the worker stream), so a
    /// listener's default deadline does not apply to it.
    public let longLived: Bool
    /// Answers a unary call on the event loop when it can do so without waiting; the
    /// connection falls back to `handler` when it returns nil (or is absent).
    public let immediate: RPCImmediateHandler?
    let metrics: MethodMetrics
    /// `/package.Service/Method`, as registered.
    public let path: String
    let pathBytes: [UInt8]

    init(
      handler: @escaping RPCHandler, longLived: Bool, immediate: RPCImmediateHandler?,
      metrics: MethodMetrics, path: String
    ) {
      self.handler = handler
      self.longLived = longLived
      self.immediate = immediate
      self.metrics = metrics
      self.path = path
      self.pathBytes = Array(path.utf8)
    }
  }

  private var handlers: [String: Route] = [:]
  /// The routes by a hash of their path's bytes, so a request's `:path` is routed without
  /// making a `String` of it: a bucket per hash modulo a power of two over four times the
  /// routes, so routing hashes the path once and never through `Hasher`. A client choosing
  /// paths that collide gains nothing: a bucket holds only registered routes.
  private var buckets: [[Route]] = [[]]

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
      metrics: MethodMetrics(path: path, longLived: longLived), path: path)
    handlers[path] = route
    var size = buckets.count
    while size < 4 * handlers.count { size *= 2 }
    buckets = [[Route]](repeating: [], count: size)
    for route in handlers.values {
      let h = route.pathBytes.withUnsafeBytes(Self.hash)
      buckets[Int(truncatingIfNeeded: h) & (size - 1)].append(route)
    }
  }

  /// The route for a request's `:path` bytes.
  func route(forPath bytes: UnsafeRawBufferPointer) -> Route? {
    let h = Self.hash(bytes)
    for route in buckets[Int(truncatingIfNeeded: h) & (buckets.count - 1)]
    where Self.equal(route.pathBytes, bytes) {
      return route
    }
    return nil
  }

  private static func equal(_ path: [UInt8], _ bytes: UnsafeRawBufferPointer) -> Bool {
    path.count == bytes.count
      && path.withUnsafeBytes { p in
        guard let a = p.baseAddress, let b = bytes.baseAddress else { return p.isEmpty }
        return memcmp(a, b, p.count) == 0
      }
  }

  /// FNV-1a over 8-byte words, then the tail bytes: cheap for the short paths of gRPC
  /// methods; routes in the same bucket are compared byte by byte.
  static func hash(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    let prime: UInt64 = 0x0000_0100_0000_01b3
    var i = 0
    while i + 8 <= bytes.count {
      h = (h ^ bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self)) &* prime
      i += 8
    }
    while i < bytes.count {
      h = (h ^ UInt64(bytes[i])) &* prime
      i += 1
    }
    return h ^ (h >> 32)
  }

  public func route(for path: String) -> Route? { handlers[path] }

  public func handler(for path: String) -> RPCHandler? { handlers[path]?.handler }

  public var paths: [String] { handlers.keys.sorted() }
}
