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
    var words: [UInt64] = [0, 0, 0, 0]
    for (i, byte) in hashBytes.enumerated() {
      words[i / 8] = words[i / 8] << 8 | UInt64(byte)
    }
    (h0, h1, h2, h3) = (words[0], words[1], words[2], words[3])
    self.sizeBytes = sizeBytes
  }

  /// Parses a lowercase 64-character hex hash; `nil` for anything else.
  public init?(hash: some StringProtocol, sizeBytes: Int64) {
    guard sizeBytes >= 0 else { return nil }
    let utf8 = hash.utf8
    guard utf8.count == 64 else { return nil }
    var words: [UInt64] = [0, 0, 0, 0]
    var i = 0
    for c in utf8 {
      let nibble: UInt8
      switch c {
      case UInt8(ascii: "0")...UInt8(ascii: "9"): nibble = c - UInt8(ascii: "0")
      case UInt8(ascii: "a")...UInt8(ascii: "f"): nibble = c - UInt8(ascii: "a") + 10
      default: return nil
      }
      words[i / 16] = words[i / 16] << 4 | UInt64(nibble)
      i += 1
    }
    (h0, h1, h2, h3) = (words[0], words[1], words[2], words[3])
    self.sizeBytes = sizeBytes
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
    let digits: [UInt8] = Array("0123456789abcdef".utf8)
    return String(unsafeUninitializedCapacity: 64) { buffer in
      var i = 0
      for byte in hashBytes {
        buffer[i] = digits[Int(byte >> 4)]
        buffer[i + 1] = digits[Int(byte & 0xF)]
        i += 2
      }
      return 64
    }
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
