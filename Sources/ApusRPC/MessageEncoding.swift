/// A gRPC message encoding (`grpc-encoding`), for requests the server reads and responses
/// it may compress.
public enum MessageEncoding: String, Sendable, Equatable, CaseIterable {
  case identity, gzip, zstd

  /// What the server advertises in `grpc-accept-encoding`: every encoding it can read.
  static let acceptHeader = "identity,gzip,zstd"

  /// The encodings listed in a `grpc-accept-encoding` value (`"gzip, zstd"`), unknown
  /// names skipped.
  static func list(_ header: String) -> [MessageEncoding] {
    header.split(separator: ",").compactMap { name in
      MessageEncoding(rawValue: String(name.filter { $0 != " " && $0 != "\t" }))
    }
  }

  /// Inflates a compressed message, failing with RESOURCE_EXHAUSTED once it passes `limit`.
  func decompress(_ payload: [UInt8], limit: Int) throws(RPCError) -> [UInt8] {
    switch self {
    case .identity: throw RPCError(.internal, "compressed message without a grpc-encoding header")
    case .gzip: return try Gzip.decompress(payload, limit: limit)
    case .zstd: return try ZstdMessage.decompress(payload, limit: limit)
    }
  }

  /// `message` compressed at the fastest level, or nil when that would not be smaller.
  func compress(_ message: ArraySlice<UInt8>) -> [UInt8]? {
    switch self {
    case .identity: return nil
    case .gzip: return Gzip.compress(message, level: 1, smallerThan: message.count)
    case .zstd: return ZstdMessage.compress(message, level: 1, smallerThan: message.count)
    }
  }
}

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

/// Compresses one call's response messages: those of at least `minBytes` that shrink.
struct ResponseCompressor: Sendable, Equatable {
  let encoding: MessageEncoding
  let minBytes: Int

  /// The framed message (prefix and payload parts) for `parts`, compressed when it pays.
  func frame(_ parts: [ArraySlice<UInt8>]) -> [ArraySlice<UInt8>] {
    let length = parts.reduce(0) { $0 + $1.count }
    if length >= minBytes {
      let whole = parts.count == 1 ? parts[0] : parts.reduce(into: [UInt8]()) { $0 += $1 }[...]
      if let packed = encoding.compress(whole) {
        return [grpcMessagePrefix(length: packed.count, compressed: true)[...], packed[...]]
      }
    }
    return [grpcMessagePrefix(length: length)[...]] + parts
  }
}
