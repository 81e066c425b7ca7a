/// Server: which responses are compressed and how (`servers[].response_compression`).
public struct ResponseCompression: Sendable, Equatable {
  /// Messages smaller than this go out as they are.
  public var minBytes: Int
  /// What the server may use, preferred first.
  public var encodings: [MessageEncoding]

  public init(minBytes: Int, encodings: [MessageEncoding]) {
    self.minBytes = minBytes
    self.encodings = encodings.filter { $0 != .identity }
  }

  /// The compressor for a call whose client sent `acceptEncoding`: the first of `encodings`
  /// it lists; nil when it lists none (or sent no header).
  func compressor(acceptEncoding: String?) -> ResponseCompressor? {
    guard let acceptEncoding else { return nil }
    let accepted = MessageEncoding.list(acceptEncoding)
    guard let chosen = encodings.first(where: accepted.contains) else { return nil }
    return ResponseCompressor(encoding: chosen, minBytes: minBytes)
  }
}
