/// `servers[].response_compression`: gRPC message compression of responses. Absent: off,
/// every response goes out uncompressed (requests in any supported encoding are still read).
///
/// Keys, defaults and their meaning live here and nowhere else:
/// - `min_bytes` (1024): responses smaller than this are sent as they are.
/// - `encodings` (`["zstd", "gzip"]`): what the server may use, in order of preference; the
///   first one the client lists in `grpc-accept-encoding` is the call's encoding.
///
/// A response that does not shrink is sent uncompressed (each message says which it is).
/// Both encodings run at their fastest level (zstd 1, gzip 1): the server pays the CPU.
public struct ResponseCompressionConfig: Sendable, Equatable, Decodable {
  /// A gRPC message encoding the server can produce.
  public enum Encoding: String, Sendable, Equatable, CaseIterable {
    case zstd, gzip
  }

  public var minBytes: Int
  public var encodings: [Encoding]

  public static let defaultMinBytes = 1024

  public init(minBytes: Int = Self.defaultMinBytes, encodings: [Encoding] = [.zstd, .gzip]) {
    self.minBytes = minBytes
    self.encodings = encodings
  }

  public init(from decoder: any Decoder) throws {
    let o = try ConfigObject(decoder, allowedKeys: ["min_bytes", "encodings"])
    minBytes = Int(try o.integer("min_bytes", positive: false) ?? Int64(Self.defaultMinBytes))
    guard let names = try o.strings("encodings") else {
      encodings = [.zstd, .gzip]
      return
    }
    guard !names.isEmpty else {
      throw o.error("encodings", "must list at least one of zstd, gzip (omit the block to turn compression off)")
    }
    var encodings: [Encoding] = []
    for (i, name) in names.enumerated() {
      guard let encoding = Encoding(rawValue: name) else {
        throw ConfigError(path: "\(o.path("encodings"))[\(i)]", "expected zstd or gzip, got \"\(name)\"")
      }
      guard !encodings.contains(encoding) else {
        throw ConfigError(path: "\(o.path("encodings"))[\(i)]", "\"\(name)\" is listed twice")
      }
      encodings.append(encoding)
    }
    self.encodings = encodings
  }
}
