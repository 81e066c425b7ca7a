/// The checks of a zstd-compressed upload of a blob whose uncompressed size is known
/// (REAPI `compressed-blobs/zstd` Writes and compressed batch blobs): decompresses as the
/// chunks arrive, and fails with INVALID_ARGUMENT as soon as the output passes the size,
/// the compressed input grows past what any encoder produces for it, or — at the end — the
/// stream stops short or inside a frame.
///
/// It does not hash: stores hash what they are given (the `verify` store), so the
/// uncompressed bytes are hashed once, as for uncompressed uploads.
public final class ZstdUploadDecoder {
  private let decompressor: ZstdDecompressor
  public let expectedSize: Int64
  /// The most compressed bytes accepted: zstd's worst case for the size (incompressible
  /// data in raw blocks) plus 64 KiB for frame headers, split frames and skippable frames.
  public let maxCompressedBytes: Int64
  /// Compressed bytes taken so far.
  public private(set) var compressedBytes: Int64 = 0

  public init(expectedSize: Int64) throws(RPCError) {
    self.expectedSize = expectedSize
    let size = Int(clamping: expectedSize)
    let bound = Int64(ZstdCompressor.maxCompressedSize(size))
    self.maxCompressedBytes = bound > Int64.max - 64 * 1024 ? Int64.max : bound + 64 * 1024
    decompressor = try ZstdDecompressor(
      outputLimit: size, maxWindowLog: ZstdDecompressor.maxWindowLog(forSize: size))
  }

  /// Uncompressed bytes produced so far.
  public var decodedBytes: Int64 { Int64(decompressor.totalOutput) }

  /// Takes the next compressed chunk; drain ``next(maxBytes:)`` before the following one.
  public func push(_ chunk: ArraySlice<UInt8>) throws(RPCError) {
    compressedBytes += Int64(chunk.count)
    guard compressedBytes <= maxCompressedBytes else {
      throw RPCError(
        .invalidArgument,
        "the compressed upload passed \(maxCompressedBytes) bytes, more than zstd needs for "
          + "a blob of \(expectedSize) bytes")
    }
    decompressor.push(chunk)
  }

  public func push(_ chunk: [UInt8]) throws(RPCError) { try push(chunk[...]) }

  /// The next uncompressed chunk (at most `maxBytes`), or nil when the pushed chunk is used up.
  public func next(maxBytes: Int) throws(RPCError) -> [UInt8]? {
    do {
      return try decompressor.next(maxBytes: maxBytes)
    } catch {
      guard decodedBytes > expectedSize else { throw error }
      throw RPCError(
        .invalidArgument,
        "the compressed upload decompresses to more than the digest's \(expectedSize) bytes")
    }
  }

  /// After the last chunk: the stream must end at a frame end with exactly the digest's size.
  public func finish() throws(RPCError) {
    try decompressor.finish()
    guard decodedBytes == expectedSize else {
      throw RPCError(
        .invalidArgument,
        "the compressed upload decompresses to \(decodedBytes) bytes, the digest says \(expectedSize)")
    }
  }

  /// Decodes a whole compressed value in memory (a batch blob), checked the same way.
  public static func decodeAll(_ compressed: [UInt8], expectedSize: Int64) throws(RPCError) -> [UInt8] {
    let decoder = try ZstdUploadDecoder(expectedSize: expectedSize)
    try decoder.push(compressed)
    var out: [UInt8] = []
    out.reserveCapacity(Int(clamping: expectedSize))
    while let chunk = try decoder.next(maxBytes: max(1, Int(clamping: expectedSize) + 1)) {
      out += chunk
    }
    try decoder.finish()
    return out
  }
}
