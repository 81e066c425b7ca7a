import Testing

@testable import ApusProto

/// The server's direct decoders (``DecodedFindMissingBlobsRequest``,
/// ``DecodedGetActionResultRequest``, `ProtoReader.digest`) against the generated ones:
/// same digests, same errors on malformed input.
@Suite("Requests decoded straight into BlobDigest", .timeLimit(.minutes(3)))
struct DecodedRequestTests {
  static let hashA = String(repeating: "a", count: 64)
  static let emptyHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

  static func digest(_ hash: String, _ size: Int64) -> Digest {
    var d = Digest()
    d.hash = hash
    d.sizeBytes = size
    return d
  }

  /// Digests of every kind: well-formed, each way of being malformed.
  static let digests: [Digest] = [
    digest(hashA, 5), digest(emptyHash, 0), digest(hashA, Int64.max), digest(hashA, -1),
    digest(hashA.uppercased(), 5), digest(String(hashA.dropLast()), 5), digest(hashA + "a", 5),
    digest("", 0), digest(String(repeating: "é", count: 32), 5), digest(String(repeating: "g", count: 64), 1),
  ]

  @Test("each digest decodes to its BlobDigest, or is kept as received", arguments: digests)
  func digestCases(d: Digest) throws {
    var request = GetActionResultRequest()
    request.actionDigest = d
    let decoded = try DecodedGetActionResultRequest(serializedBytes: request.serializedBytes())
    if let valid = d.validated {
      #expect(decoded.actionDigest == .valid(valid))
    } else {
      #expect(decoded.actionDigest == .invalid(d))
    }
    #expect(decoded.serializedBytes() == request.serializedBytes())
  }

  @Test("an absent action_digest stays absent; other fields carry over")
  func getActionResultFields() throws {
    var request = GetActionResultRequest()
    request.instanceName = "main"
    request.inlineStdout = true
    request.inlineOutputFiles = ["a", "b"]
    request.digestFunction = .sha256
    let decoded = try DecodedGetActionResultRequest(serializedBytes: request.serializedBytes())
    #expect(decoded.actionDigest == nil)
    #expect(decoded.instanceName == "main" && decoded.inlineStdout && decoded.inlineOutputFiles == ["a", "b"])
    #expect(decoded.digestFunction == .sha256)
    #expect(decoded.serializedBytes() == request.serializedBytes())
  }

  @Test("FindMissingBlobs keeps the digests before the first malformed one and its index")
  func findMissingFirstInvalid() throws {
    var request = FindMissingBlobsRequest()
    request.instanceName = "x"
    request.blobDigests = [Self.digest(Self.hashA, 1), Self.digest(Self.emptyHash, 0), Self.digest("zz", 1), Self.digest(Self.hashA, -3)]
    let decoded = try DecodedFindMissingBlobsRequest(serializedBytes: request.serializedBytes())
    #expect(decoded.instanceName == "x")
    #expect(decoded.digests == [BlobDigest(hash: Self.hashA, sizeBytes: 1)!, .empty])
    #expect(decoded.firstInvalid?.index == 2)
    #expect(decoded.firstInvalid?.digest == Self.digest("zz", 1))

    request.blobDigests = (0..<300).map { Self.digest(Self.hashA, Int64($0)) }
    let all = try DecodedFindMissingBlobsRequest(serializedBytes: request.serializedBytes())
    #expect(all.firstInvalid == nil)
    #expect(all.digests.map(\.proto) == request.blobDigests)
    #expect(all.serializedBytes() == request.serializedBytes())
  }

  @Test("unknown fields inside a digest and around it are skipped")
  func unknownFields() throws {
    var inner = ProtoWriter()
    inner.uint64(7, 9)
    inner.string(1, Self.hashA)
    inner.bytes(15, [1, 2, 3])
    inner.int64(2, 42)
    var outer = ProtoWriter()
    outer.uint64(99, 1)
    outer.bytes(2, inner.bytes)
    let decoded = try DecodedFindMissingBlobsRequest(serializedBytes: outer.bytes)
    #expect(decoded.digests == [BlobDigest(hash: Self.hashA, sizeBytes: 42)!])
  }

  /// Malformed Digest sub-messages (field 2 of both requests), as raw bytes.
  static let malformed: [[UInt8]] = [
    [0x12, 0x03, 0x0A, 0x01, 0xFF],  // hash not UTF-8
    [0x12, 0x02, 0x08, 0x01],  // hash as a varint
    [0x12, 0x02, 0x0A, 0x05],  // hash longer than the digest
    [0x12, 0x02, 0x10, 0x80],  // truncated size varint
    [0x12, 0x01, 0x0B],  // unsupported wire type (start group)
    [0x12, 0x05, 0x0A, 0x01, 0x61],  // digest longer than the message
    [0x12, 0x02, 0x15, 0x00],  // truncated fixed32
    [0x12, 0x00, 0x1A, 0x01],  // (field 3 of FindMissingBlobs is a varint)
  ]

  @Test("malformed digests fail with the generated decoders' errors", arguments: malformed)
  func malformedErrors(bytes: [UInt8]) {
    func error(_ body: () throws -> Any) -> String? {
      do { _ = try body(); return nil } catch { return "\(error)" }
    }
    let plainFind = error { try FindMissingBlobsRequest(serializedBytes: bytes) }
    #expect(plainFind != nil)
    #expect(error { try DecodedFindMissingBlobsRequest(serializedBytes: bytes) } == plainFind)
    let plainGet = error { try GetActionResultRequest(serializedBytes: bytes) }
    #expect(error { try DecodedGetActionResultRequest(serializedBytes: bytes) } == plainGet)
  }

  @Test("a hash that is not UTF-8 fails even when a later one is well-formed")
  func laterHashDoesNotHideEarlierError() {
    var inner: [UInt8] = [0x0A, 0x01, 0xFF, 0x0A, 0x40] + Array(Self.hashA.utf8)
    inner = [0x12, UInt8(inner.count)] + inner
    #expect(throws: ProtoDecodingError("field 1 is not valid UTF-8")) {
      try DecodedFindMissingBlobsRequest(serializedBytes: inner)
    }
  }

  @Test("FindMissingBlobsResponse from BlobDigests is the generated encoding", arguments: [
    [Int64](), [0], [1, 127, 128, 16_384, Int64.max], Array(0..<200).map { Int64($0) * 1_000_003 },
  ])
  func responseEncoding(sizes: [Int64]) throws {
    let digests = sizes.enumerated().map { i, size in
      BlobDigest(hash: String(repeating: "0123456789abcdef".map(String.init)[i % 16], count: 64), sizeBytes: size)!
    }
    var generic = FindMissingBlobsResponse()
    generic.missingBlobDigests = digests.map(\.proto)
    let direct = FindMissingBlobsResponse.serializedBytes(missing: digests)
    #expect(direct == generic.serializedBytes())
    #expect(direct.capacity >= direct.count)
    #expect(try FindMissingBlobsResponse(serializedBytes: direct) == generic)
  }
}
