/// The 48 bytes after the content of a `.sealed` file: content length (UInt64, little
/// endian), SHA-256 of the content, and a magic last, so a truncated file never ends in one.
///
/// Action-cache values are keyed by the action, not by their own hash and size, so their
/// file name cannot say whether they are whole; the trailer can. A trailer, not a header,
/// because a streamed write learns the length and checksum only at its end.
struct EntryTrailer: Equatable {
  static let byteCount = 48
  static let magic: [UInt8] = Array("APUSEND1".utf8)

  var contentLength: Int64
  var sha256: [UInt8]

  var bytes: [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(Self.byteCount)
    withUnsafeBytes(of: UInt64(contentLength).littleEndian) { out.append(contentsOf: $0) }
    out.append(contentsOf: sha256)
    out.append(contentsOf: Self.magic)
    return out
  }

  /// Parses the last 48 bytes of a file of `fileSize` bytes; nil unless the magic is there
  /// and the recorded length accounts for exactly the rest of the file.
  init?(_ bytes: [UInt8], fileSize: Int64) {
    guard bytes.count == Self.byteCount, Array(bytes[40..<48]) == Self.magic else { return nil }
    var length: UInt64 = 0
    for i in (0..<8).reversed() { length = length << 8 | UInt64(bytes[i]) }
    guard length <= UInt64(Int64.max), Int64(length) + Int64(Self.byteCount) == fileSize else {
      return nil
    }
    contentLength = Int64(length)
    sha256 = Array(bytes[8..<40])
  }

  init(contentLength: Int64, sha256: [UInt8]) {
    self.contentLength = contentLength
    self.sha256 = sha256
  }
}

/// How an entry is laid out on disk, which its file name says.
enum EntryLayout: Sendable, Equatable {
  /// `<hash>-<size>`: the content alone, which hashes to the name (the CAS layout).
  case plain
  /// `<hash>-<size>.sealed`: the content, then an `EntryTrailer`.
  case sealed
  /// `<hash>-<size>.zst`: the content as one zstd frame, then a `ZstdEntryTrailer`
  /// (`compression: zstd`).
  case zstd

  static let sealedSuffix = ".sealed"
  static let zstdSuffix = ".zst"

  /// What follows `<hash>-<size>` in the file name.
  var suffix: String {
    switch self {
    case .plain: ""
    case .sealed: Self.sealedSuffix
    case .zstd: Self.zstdSuffix
    }
  }
}
