import ApusProto
import Testing

@testable import ApusServices

@Suite("ByteStream resource names", .timeLimit(.minutes(3)))
struct ResourceNameTests {
  static let h = String(repeating: "a", count: 64)

  @Test("valid names", arguments: [
    ("blobs/\(h)/5", ResourceName.Kind.read, "", nil as String?, nil as String?),
    ("main/blobs/\(h)/5", .read, "main", nil, nil),
    ("a/b/c/blobs/\(h)/5", .read, "a/b/c", nil, nil),
    ("uploads/u-1/blobs/\(h)/5", .write, "", "u-1", nil),
    ("x/uploads/u/blobs/\(h)/5/some/metadata", .write, "x", "u", nil),
    ("x/compressed-blobs/zstd/\(h)/5", .read, "x", nil, "zstd"),
    ("uploads/u/compressed-blobs/zstd/\(h)/5", .write, "", "u", "zstd"),
  ])
  func valid(name: String, kind: ResourceName.Kind, instance: String, upload: String?, compressor: String?) throws {
    let r = try ResourceName.parse(name, kind: kind).get()
    #expect(r.instanceName == instance)
    #expect(r.uploadID == upload)
    #expect(r.compressor == compressor)
    #expect(r.digest == BlobDigest(hash: Self.h, sizeBytes: 5))
  }

  @Test("the optional digest-function segment (REAPI 2.3)", arguments: [
    ("blobs/blake3/\(h)/5", ResourceName.Kind.read, "blake3" as String?),
    ("i/compressed-blobs/zstd/sha256/\(h)/5", .read, "sha256"),
    ("uploads/u/blobs/sha256tree/\(h)/5/meta", .write, "sha256tree"),
    ("uploads/u/compressed-blobs/zstd/blake3/\(h)/5", .write, "blake3"),
    ("uploads/u/blobs/\(h)/5/blake3", .write, nil),
  ])
  func digestFunction(name: String, kind: ResourceName.Kind, function: String?) throws {
    let r = try ResourceName.parse(name, kind: kind).get()
    #expect(r.digestFunction == function)
    #expect(r.digest == BlobDigest(hash: Self.h, sizeBytes: 5))
  }

  @Test("invalid names", arguments: [
    ("", ResourceName.Kind.read), ("blobs", .read), ("blobs/\(h)", .read),
    ("blobs/\(h)/x", .read), ("blobs/\(h)/-1", .read), ("blobs/abc/1", .read),
    ("blobs/\(h)/1/extra", .read), ("/blobs/\(h)/1", .read), ("a//blobs/\(h)/1", .read),
    ("uploads/blobs/\(h)/1", .write), ("blobs/\(h)/1", .write), ("uploads/u/\(h)/1", .write),
    ("uploads//blobs/\(h)/1", .write), ("uploads/u/blobs/\(h.uppercased())/1", .write),
    ("uploads/u/blobs/\(h)/99999999999999999999", .write),
  ])
  func invalid(name: String, kind: ResourceName.Kind) {
    #expect(throws: ResourceNameError.self) { try ResourceName.parse(name, kind: kind).get() }
  }
}
