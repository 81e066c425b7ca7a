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
    let missing = try await ContentAddressableStorageService.findMissing(table, find)
    #expect(missing.missingBlobDigests == [SHA256Hasher.digest(of: [9]).proto])
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

  @Test("unsupported digest functions are refused")
  func digestFunction() async {
    var find = FindMissingBlobsRequest()
    find.digestFunction = .blake3
    await #expect(throws: RPCError.self) {
      _ = try await ContentAddressableStorageService.findMissing(table, find)
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
