/// The 56 bytes after the zstd frame of a `.zst` file: the frame's length and the content's
/// length (UInt64, little endian), the content's SHA-256, and a magic last, so a truncated
/// file never ends in one.
///
/// The content length bounds decompression (more output is damage, never a bomb), and the
/// checksum serves verification and action-cache values, whose key is not their hash.
struct ZstdEntryTrailer: Equatable {
  static let byteCount = 56
  static let magic: [UInt8] = Array("APUSZST1".utf8)

  /// Bytes of the zstd frame: the file less the trailer.
  var storedLength: Int64
  /// Bytes of the content the frame decompresses to.
  var contentLength: Int64
  var sha256: [UInt8]

  var bytes: [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(Self.byteCount)
    withUnsafeBytes(of: UInt64(storedLength).littleEndian) { out.append(contentsOf: $0) }
    withUnsafeBytes(of: UInt64(contentLength).littleEndian) { out.append(contentsOf: $0) }
    out.append(contentsOf: sha256)
    out.append(contentsOf: Self.magic)
    return out
  }

  /// Parses the last 56 bytes of a file of `fileSize` bytes; nil unless the magic is there
  /// and the recorded frame length accounts for exactly the rest of the file.
  init?(_ bytes: [UInt8], fileSize: Int64) {
    guard bytes.count == Self.byteCount, Array(bytes[48..<56]) == Self.magic else { return nil }
    func uint64(at start: Int) -> UInt64 {
      (0..<8).reversed().reduce(UInt64(0)) { $0 << 8 | UInt64(bytes[start + $1]) }
    }
    let stored = uint64(at: 0), content = uint64(at: 8)
    guard stored <= UInt64(Int64.max), content <= UInt64(Int64.max),
      Int64(stored) + Int64(Self.byteCount) == fileSize
    else { return nil }
    storedLength = Int64(stored)
    contentLength = Int64(content)
    sha256 = Array(bytes[16..<48])
  }

  init(storedLength: Int64, contentLength: Int64, sha256: [UInt8]) {
    self.storedLength = storedLength
    self.contentLength = contentLength
    self.sha256 = sha256
  }
}
