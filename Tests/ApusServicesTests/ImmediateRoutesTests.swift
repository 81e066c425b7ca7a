import ApusConfig
import ApusProto
import ApusRPC
import ApusStore
import Foundation
import Logging
import Testing

@testable import ApusServices

/// GetActionResult and FindMissingBlobs answered on the event loop: the same bytes,
/// statuses and lookup counts as their handlers, and nil when the store would wait.
@Suite("REAPI calls answered without a task", .timeLimit(.minutes(1)))
struct ImmediateRoutesTests {
  static let ac = "/build.bazel.remote.execution.v2.ActionCache/GetActionResult"
  static let find = "/build.bazel.remote.execution.v2.ContentAddressableStorage/FindMissingBlobs"

  let context = ServerContext(path: "/x", metadata: Metadata(), deadline: nil, peer: "test")

  func table(_ cas: any BlobStore, _ ac: any BlobStore) -> InstanceTable {
    InstanceTable(
      instances: ["i": Instance(cas: cas, actionCache: ac, actionCacheUpdates: true)],
      maxMessageBytes: 1 << 20)
  }

  func immediate(_ table: InstanceTable, _ path: String) throws -> RPCImmediateHandler {
    try #require(RemoteExecutionAPI.router(for: table).route(for: path)?.immediate)
  }

  @Test("GetActionResult: a memory hit, a miss and a bad request as the handler answers them")
  func getActionResult() async throws {
    let ac = MemoryStore()
    let result = Array("stored action result".utf8)
    let key = SHA256Hasher.digest(of: [1])
    try await ac.writeAll(key, result)
    let now = try immediate(table(MemoryStore(), ac), Self.ac)
    var request = GetActionResultRequest()
    request.instanceName = "i"
    request.actionDigest = key.proto
    let before = ActionCacheLookups.shared.snapshot()["i"] ?? (0, 0)
    #expect(try now(request.serializedBytes(), context) == result)
    request.actionDigest = SHA256Hasher.digest(of: [2]).proto
    #expect(throws: RPCError(.notFound, "no action result for \(SHA256Hasher.digest(of: [2]))")) {
      _ = try now(request.serializedBytes(), context)
    }
    let after = ActionCacheLookups.shared.snapshot()["i"] ?? (0, 0)
    #expect(after.hits - before.hits == 1 && after.misses - before.misses == 1)
    request.instanceName = "zz"
    #expect(throws: RPCError(.invalidArgument, "unknown instance name \"zz\"")) {
      _ = try now(request.serializedBytes(), context)
    }
  }

  @Test("FindMissingBlobs: the handler's response bytes from a memory CAS")
  func findMissing() async throws {
    let table = table(VerifyStore(backend: MemoryStore()), MemoryStore())
    let present = (0..<5).map { [UInt8]([UInt8($0)]) }
    for blob in present { try await table.cas("i").writeAll(SHA256Hasher.digest(of: blob), blob) }
    var request = FindMissingBlobsRequest()
    request.instanceName = "i"
    request.blobDigests = (0..<10).map { SHA256Hasher.digest(of: [UInt8($0)]).proto }
    let now = try immediate(table, Self.find)
    let expected = try await ContentAddressableStorageService.findMissing(table, request.decoded())
    #expect(try now(request.serializedBytes(), context) == FindMissingBlobsResponse.serializedBytes(missing: expected))
    #expect(expected.count == 5)
  }

  @Test("a store that would wait sends the call to its handler")
  func wouldWait() async throws {
    let now = try immediate(table(WaitingStore(), WaitingStore()), Self.find)
    var request = FindMissingBlobsRequest()
    request.instanceName = "i"
    request.blobDigests = [SHA256Hasher.digest(of: [1]).proto]
    #expect(try now(request.serializedBytes(), context) == nil)
    var get = GetActionResultRequest()
    get.instanceName = "i"
    get.actionDigest = SHA256Hasher.digest(of: [1]).proto
    #expect(try immediate(table(WaitingStore(), WaitingStore()), Self.ac)(get.serializedBytes(), context) == nil)
  }

  @Test("GetCapabilities: the handler's bytes, and its error for an unknown instance")
  func capabilities() throws {
    let table = table(MemoryStore(), MemoryStore())
    let now = try immediate(table, "/build.bazel.remote.execution.v2.Capabilities/GetCapabilities")
    var request = GetCapabilitiesRequest()
    request.instanceName = "i"
    let expected = try CapabilitiesService.capabilities(table, "i").serializedBytes()
    #expect(try now(request.serializedBytes(), context) == expected)
    #expect(try ServerCapabilities(serializedBytes: expected).cacheCapabilities?.digestFunctions == [.sha256])
    request.instanceName = "zz"
    #expect(throws: RPCError(.invalidArgument, "unknown instance name \"zz\"")) {
      _ = try now(request.serializedBytes(), context)
    }
  }

  @Test("with auth configured, calls always go through the handler's access check")
  func auth() async throws {
    let authorizer = try await Authorizer(
      config: AuthConfig(tokens: nil, instances: ["*": ["anonymous": [.read]]]),
      logger: Logger(label: "test"))
    var table = table(MemoryStore(), MemoryStore())
    table.authorizer = authorizer
    let router = RemoteExecutionAPI.router(for: table)
    #expect(router.route(for: Self.ac)?.immediate == nil)
    #expect(router.route(for: Self.find)?.immediate == nil)
  }
}

/// A store that can only answer asynchronously (the protocol's defaults).
struct WaitingStore: BlobStore {
  let base = MemoryStore()
  func findMissing(_ digests: [BlobDigest]) async throws -> [BlobDigest] {
    try await base.findMissing(digests)
  }
  func read(
    _ digest: BlobDigest, offset: Int64, limit: Int64?, into sink: (ArraySlice<UInt8>) async throws -> Void
  ) async throws -> Bool {
    try await base.read(digest, offset: offset, limit: limit, into: sink)
  }
  func write<Chunks: AsyncSequence<ArraySlice<UInt8>, any Error>>(_ digest: BlobDigest, from chunks: Chunks) async throws {
    try await base.write(digest, from: chunks)
  }
}
