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
