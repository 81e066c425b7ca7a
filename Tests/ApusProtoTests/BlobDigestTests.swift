import Testing

@testable import ApusProto

@Suite("BlobDigest", .timeLimit(.minutes(3)))
struct BlobDigestTests {
  let hex = "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"

  @Test("hex round-trips through the compact form")
  func roundTrip() throws {
    let d = try #require(BlobDigest(hash: hex, sizeBytes: 11))
    #expect(d.hashHex == hex)
    #expect(d.description == "\(hex)/11")
    #expect(d.proto.hash == hex)
    #expect(BlobDigest(hashBytes: d.hashBytes, sizeBytes: 11) == d)
    #expect(BlobDigest(hash: ("/" + hex + "/").dropFirst().dropLast(), sizeBytes: 11) == d)
  }

  @Test("rejects what is not a SHA-256 digest", arguments: [
    ("B94D27B9934D3E08A52E52D7DA7DABFAC484EFE37A5380EE9088F7ACE2EFCDE9", 11),
    (String(repeating: "a", count: 63), 11),
    (String(repeating: "a", count: 65), 11),
    (String(repeating: "g", count: 64), 11),
    (String(repeating: "a", count: 63) + "/", 11),
    (String(repeating: "a", count: 62) + "é", 11),
    ("", 0),
    (String(repeating: "a", count: 64), -1),
  ] as [(String, Int64)])
  func rejects(hash: String, size: Int64) {
    #expect(BlobDigest(hash: hash, sizeBytes: size) == nil)
  }

  @Test("eight digits at a time agree with a digit-by-digit parse for every byte in every position")
  func swarMatchesReference() throws {
    // Each byte value at each of the 64 positions of an otherwise valid hash, plus random
    // valid hashes: accepted exactly when all are lowercase hex, with the same words.
    func reference(_ bytes: [UInt8]) -> [UInt8]? {
      var out: [UInt8] = []
      for pair in stride(from: 0, to: 64, by: 2) {
        func nibble(_ c: UInt8) -> UInt8? {
          switch c {
          case 0x30...0x39: c - 0x30
          case 0x61...0x66: c - 0x61 + 10
          default: nil
          }
        }
        guard let hi = nibble(bytes[pair]), let lo = nibble(bytes[pair + 1]) else { return nil }
        out.append(hi << 4 | lo)
      }
      return out
    }
    var cases: [[UInt8]] = []
    let valid = Array(hex.utf8)
    for position in 0..<64 {
      for value in 0...255 {
        var bytes = valid
        bytes[position] = UInt8(value)
        cases.append(bytes)
      }
    }
    let digits = Array("0123456789abcdef".utf8)
    for _ in 0..<2000 { cases.append((0..<64).map { _ in digits.randomElement()! }) }
    for bytes in cases {
      let parsed = bytes.withUnsafeBufferPointer { BlobDigest(hashUTF8: $0, sizeBytes: 1) }
      #expect(parsed?.hashBytes == reference(bytes), "\(bytes)")
    }
  }

  @Test("size is part of the identity")
  func sizeMatters() throws {
    let a = try #require(BlobDigest(hash: hex, sizeBytes: 11))
    let b = try #require(BlobDigest(hash: hex, sizeBytes: 12))
    #expect(a != b)
    #expect(BlobDigest.empty.isEmpty)
    #expect(!a.isEmpty)
  }
}
