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

  @Test("size is part of the identity")
  func sizeMatters() throws {
    let a = try #require(BlobDigest(hash: hex, sizeBytes: 11))
    let b = try #require(BlobDigest(hash: hex, sizeBytes: 12))
    #expect(a != b)
    #expect(BlobDigest.empty.isEmpty)
    #expect(!a.isEmpty)
  }
}
