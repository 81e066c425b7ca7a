import ApusProto
import ApusRPC
import ApusStore
import Testing

@testable import ApusServices

@Suite("CAS service logic", .timeLimit(.minutes(3)))
struct ContentAddressableStorageServiceTests {
  let table = InstanceTable(
    instances: [
      "": Instance(cas: VerifyStore(backend: MemoryStore()), actionCache: MemoryStore(), actionCacheUpdates: true),
      "ro": Instance(cas: nil, actionCache: MemoryStore(), actionCacheUpdates: false),
    ],
    maxMessageBytes: 1 << 20)

  func request(_ blobs: [[UInt8]], instance: String = "") -> BatchUpdateBlobsRequest {
    var r = BatchUpdateBlobsRequest()
    r.instanceName = instance
    r.requests = blobs.map { b in
      var item = BatchUpdateBlobsRequest.Request()
      item.digest = SHA256Hasher.digest(of: b).proto
      item.data = b
      return item
    }
    return r
  }

  @Test("batch update then find missing")
  func batch() async throws {
    let blobs: [[UInt8]] = [[1], [2, 2], []]
    let response = try await ContentAddressableStorageService.batchUpdate(table, request(blobs))
    #expect(response.responses.map { $0.status?.code ?? -1 } == [0, 0, 0])
    var find = FindMissingBlobsRequest()
    find.blobDigests = (blobs + [[9]]).map { SHA256Hasher.digest(of: $0).proto }
    let missing = try await ContentAddressableStorageService.findMissing(table, find.decoded())
    #expect(missing == [SHA256Hasher.digest(of: [9])])
  }

  @Test("instances without a CAS answer UNIMPLEMENTED; unknown ones INVALID_ARGUMENT")
  func instances() async {
    await #expect(throws: RPCError(.unimplemented, "instance \"ro\" has no content-addressable storage")) {
      _ = try await ContentAddressableStorageService.batchUpdate(table, request([[1]], instance: "ro"))
    }
    await #expect(throws: RPCError(.invalidArgument, "unknown instance name \"zz\"")) {
      _ = try await ContentAddressableStorageService.batchUpdate(table, request([[1]], instance: "zz"))
    }
  }

  @Test("a malformed digest is named by its index, after the instance check")
  func malformedDigest() async throws {
    var find = FindMissingBlobsRequest()
    var bad = Digest()
    bad.hash = "ABC"
    bad.sizeBytes = 3
    var negative = SHA256Hasher.digest(of: [1]).proto
    negative.sizeBytes = -2
    find.blobDigests = [SHA256Hasher.digest(of: [1]).proto, bad, negative]
    await #expect(throws: RPCError(.invalidArgument, "blob_digests[1] hash \"ABC\" is not 64 lowercase hex digits (SHA-256)")) {
      _ = try await ContentAddressableStorageService.findMissing(table, find.decoded())
    }
    find.blobDigests = [SHA256Hasher.digest(of: [1]).proto, negative, bad]
    await #expect(throws: RPCError(.invalidArgument, "blob_digests[1] has negative size -2")) {
      _ = try await ContentAddressableStorageService.findMissing(table, find.decoded())
    }
    find.instanceName = "zz"
    await #expect(throws: RPCError(.invalidArgument, "unknown instance name \"zz\"")) {
      _ = try await ContentAddressableStorageService.findMissing(table, find.decoded())
    }
  }

  @Test("unsupported digest functions are refused")
  func digestFunction() async {
    var find = FindMissingBlobsRequest()
    find.digestFunction = .blake3
    await #expect(throws: RPCError.self) {
      _ = try await ContentAddressableStorageService.findMissing(table, find.decoded())
    }
  }

  @Test("store errors map to gRPC codes in one place")
  func mapping() {
    #expect(RPCError(from: StoreError(.notFound, "x")).code == .notFound)
    #expect(RPCError(from: StoreError(.invalidArgument, "x")).code == .invalidArgument)
    #expect(RPCError(from: StoreError(.resourceExhausted, "x")).code == .resourceExhausted)
    #expect(RPCError(from: ProtoDecodingError("x")).code == .internal)
    #expect(RPCError(from: CancellationError()).code == .cancelled)
  }
}

extension FindMissingBlobsRequest {
  /// The request as the server decodes it from the wire.
  func decoded() throws -> DecodedFindMissingBlobsRequest {
    try DecodedFindMissingBlobsRequest(serializedBytes: serializedBytes())
  }
}
