/// A server call's request headers as nghttp2 hands them over, one at a time: only what
/// `startCall` needs is kept, the path is routed on its bytes, and nothing becomes a
/// `String` that the call does not use (metadata, and the rare optional gRPC headers).
struct RequestHeaders {
  var isPost = false
  /// `content-type` starts with `application/grpc`.
  var isGRPC = false
  /// The route `:path` names; nil when it names none (then `unknownPath` says what it was).
  var route: RPCRouter.Route?
  var unknownPath = ""
  var encoding: String?
  var timeout: String?
  var acceptEncoding: String?
  /// Every other header but the pseudo-headers, `te` and `user-agent`.
  var metadata: [(name: String, value: String)] = []

  mutating func add(name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer, router: RPCRouter) {
    if Self.equal(name, ":path") {
      route = router.route(forPath: value)
      if route == nil { unknownPath = Self.string(value) }
    } else if Self.equal(name, ":method") {
      isPost = Self.equal(value, "POST")
    } else if Self.equal(name, "content-type") {
      isGRPC = Self.hasPrefix(value, "application/grpc")
    } else if Self.equal(name, "te") || Self.equal(name, "user-agent") {
      return
    } else if name.first == UInt8(ascii: ":") {
      return  // :scheme, :authority
    } else if Self.equal(name, "grpc-timeout") {
      timeout = Self.string(value)
    } else if Self.equal(name, "grpc-encoding") {
      encoding = Self.string(value)
    } else if Self.equal(name, "grpc-accept-encoding") {
      acceptEncoding = Self.string(value)
    } else {
      metadata.append((Self.string(name), Self.string(value)))
    }
  }

  static func string(_ bytes: UnsafeRawBufferPointer) -> String {
    String(decoding: bytes, as: UTF8.self)
  }

  static func equal(_ bytes: UnsafeRawBufferPointer, _ literal: StaticString) -> Bool {
    bytes.count == literal.utf8CodeUnitCount && hasPrefix(bytes, literal)
  }

  static func hasPrefix(_ bytes: UnsafeRawBufferPointer, _ literal: StaticString) -> Bool {
    let count = literal.utf8CodeUnitCount
    guard bytes.count >= count else { return false }
    // Safe: a StaticString's UTF-8 lives as long as the program; `count` is its length.
    let expected = UnsafeRawBufferPointer(start: literal.utf8Start, count: count)
    return expected.elementsEqual(bytes.prefix(count))
  }
}
