/// A validated SHA-256 content digest: 32 hash bytes and a non-negative size.
///
/// The wire ``Digest`` carries a hex string; every digest entering the server is parsed
/// into this compact, cheaply hashable key (40 bytes, no heap allocation) before a store
/// sees it, so malformed hashes are rejected in one place.
public struct BlobDigest: Hashable, Sendable, Comparable, CustomStringConvertible {
  /// The hash as four big-endian 64-bit words.
  public var h0: UInt64
  public var h1: UInt64
  public var h2: UInt64
  public var h3: UInt64
  public var sizeBytes: Int64

  public init(hashBytes: some Collection<UInt8>, sizeBytes: Int64) {
    precondition(hashBytes.count == 32, "SHA-256 digests are 32 bytes")
    var words: Words = (0, 0, 0, 0)
    for (i, byte) in hashBytes.enumerated() {
      switch i / 8 {
      case 0: words.0 = words.0 << 8 | UInt64(byte)
      case 1: words.1 = words.1 << 8 | UInt64(byte)
      case 2: words.2 = words.2 << 8 | UInt64(byte)
      default: words.3 = words.3 << 8 | UInt64(byte)
      }
    }
    (h0, h1, h2, h3) = words
    self.sizeBytes = sizeBytes
  }

  /// Parses a lowercase 64-character hex hash; `nil` for anything else.
  public init?(hash: some StringProtocol, sizeBytes: Int64) {
    guard sizeBytes >= 0 else { return nil }
    // Every digest a request carries passes through here (1,000 per FindMissingBlobs), so
    // parse the UTF-8 in place rather than iterating a generic view.
    let words =
      hash.utf8.withContiguousStorageIfAvailable(Self.parseHex)
      ?? Array(hash.utf8).withUnsafeBufferPointer(Self.parseHex)
    guard let words else { return nil }
    (h0, h1, h2, h3) = words
    self.sizeBytes = sizeBytes
  }

  /// Parses 64 lowercase hex digits given as UTF-8 bytes (a file name, say); `nil` otherwise.
  public init?(hashUTF8: UnsafeBufferPointer<UInt8>, sizeBytes: Int64) {
    guard sizeBytes >= 0, let words = Self.parseHex(hashUTF8) else { return nil }
    (h0, h1, h2, h3) = words
    self.sizeBytes = sizeBytes
  }

  /// The hash as four big-endian words, the layout of `h0`…`h3`.
  typealias Words = (UInt64, UInt64, UInt64, UInt64)

  init(words: Words, sizeBytes: Int64) {
    (h0, h1, h2, h3) = words
    self.sizeBytes = sizeBytes
  }

  static func parseHex(_ utf8: UnsafeBufferPointer<UInt8>) -> Words? {
    guard utf8.count == 64, let base = utf8.baseAddress else { return nil }
    // Eight digits at a time (SWAR): every request's digests pass through here.
    let raw = UnsafeRawPointer(base)
    var valid = true
    func half(_ offset: Int) -> UInt64 {
      let (value, ok) = hexWord(
        UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: UInt64.self)))
      valid = valid && ok
      return value
    }
    let words = (
      half(0) << 32 | half(8), half(16) << 32 | half(24), half(32) << 32 | half(40),
      half(48) << 32 | half(56)
    )
    return valid ? words : nil
  }

  /// Eight lowercase hex digits (the first in the lowest byte) as their 32-bit value, and
  /// whether all eight were lowercase hex digits. Branch-free: each byte of `x` is a lane.
  @inline(__always)
  static func hexWord(_ x: UInt64) -> (UInt64, Bool) {
    let ones: UInt64 = 0x0101_0101_0101_0101
    let high = ones &* 0x80
    // With every byte below 0x80, `x + (0x80 - c)` sets a lane's high bit exactly when that
    // byte is ≥ c, and no lane carries into the next.
    func atLeast(_ c: UInt64) -> UInt64 { (x &+ ones &* (0x80 - c)) & high }
    let digit = atLeast(0x30) & ~atLeast(0x3A)
    let letter = atLeast(0x61) & ~atLeast(0x67)
    let ok = x & high == 0 && (digit | letter) == high
    // '0'…'9' keep their low nibble; 'a'…'f' (bit 6 set) have 1…6 there, plus 9.
    let nibbles = (x & (ones &* 0x0F)) &+ ((x >> 6) & ones) &* 9
    // Pairs of nibbles into bytes (first digit high), then the four bytes in digit order.
    let bytes = ((nibbles << 4) | (nibbles >> 8)) & 0x00FF_00FF_00FF_00FF
    let pairs = (bytes | (bytes >> 8)) & 0x0000_FFFF_0000_FFFF
    let packed = UInt32(truncatingIfNeeded: pairs | (pairs >> 16))
    return (UInt64(packed.byteSwapped), ok)
  }

  /// SHA-256 of the empty string, size 0: always present in every CAS.
  public static let empty = BlobDigest(
    hash: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", sizeBytes: 0)!

  public var isEmpty: Bool { self == Self.empty }

  public var hashBytes: [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(32)
    for word in [h0, h1, h2, h3] {
      for shift in stride(from: 56, through: 0, by: -8) {
        out.append(UInt8(truncatingIfNeeded: word >> UInt64(shift)))
      }
    }
    return out
  }

  /// Lowercase hex of the hash.
  public var hashHex: String {
    String(unsafeUninitializedCapacity: 64) { buffer in
      writeHex(into: buffer)
      return 64
    }
  }

  /// Writes the 64 lowercase hex digits of the hash to the start of `buffer` (at least 64
  /// bytes), for encoders that place them straight into a message.
  func writeHex(into buffer: UnsafeMutableBufferPointer<UInt8>) {
    precondition(buffer.count >= 64, "a SHA-256 hash is 64 hex digits")
    func put(_ word: UInt64, at start: Int) {
      for i in 0..<16 {
        let nibble = UInt8(truncatingIfNeeded: word >> UInt64(60 - 4 * i)) & 0x0F
        // "0"..."9" then "a"..."f" by arithmetic: no table to load.
        buffer[start + i] = nibble < 10 ? 0x30 + nibble : 0x57 + nibble
      }
    }
    put(h0, at: 0)
    put(h1, at: 16)
    put(h2, at: 32)
    put(h3, at: 48)
  }

  /// `hash/size`, the form used in resource names and error messages.
  public var description: String { "\(hashHex)/\(sizeBytes)" }

  public var proto: Digest {
    var d = Digest()
    d.hash = hashHex
    d.sizeBytes = sizeBytes
    return d
  }

  public static func < (a: BlobDigest, b: BlobDigest) -> Bool {
    (a.h0, a.h1, a.h2, a.h3, a.sizeBytes) < (b.h0, b.h1, b.h2, b.h3, b.sizeBytes)
  }
}

extension Digest {
  /// The validated form, or `nil` if the hash is not 64 lowercase hex digits or the size
  /// is negative.
  public var validated: BlobDigest? { BlobDigest(hash: hash, sizeBytes: sizeBytes) }
}
