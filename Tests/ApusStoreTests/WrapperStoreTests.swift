import ApusConfig
import ApusProto
import Synchronization
import Testing

@testable import ApusStore

/// Counts backend calls, to see what wrappers spare it.
final class CountingStore: BlobStore {
  let base = MemoryStore()
  let findCalls = Mutex(0)
  let reads = Mutex(0)
  let failWrites: Bool
  init(failWrites: Bool = false) { self.failWrites = failWrites }

  func findMissing(_ digests: [BlobDigest]) async throws -> [BlobDigest] {
    findCalls.withLock { $0 += 1 }
    return try await base.findMissing(digests)
  }
  func read(
    _ digest: BlobDigest, offset: Int64, limit: Int64?, into sink: (ArraySlice<UInt8>) async throws -> Void
  ) async throws -> Bool {
    reads.withLock { $0 += 1 }
    return try await base.read(digest, offset: offset, limit: limit, into: sink)
  }
  func write<Chunks: AsyncSequence<ArraySlice<UInt8>, any Error>>(_ digest: BlobDigest, from chunks: Chunks) async throws {
    if failWrites { throw StoreError(.resourceExhausted, "full") }
    try await base.write(digest, from: chunks)
  }
}

@Suite("Store wrappers", .timeLimit(.minutes(3)))
struct WrapperStoreTests {
  @Test("fast_slow: writes both, reads fast first, fills fast from slow")
  func fastSlow() async throws {
    let fast = CountingStore(), slow = CountingStore()
    let store = FastSlowStore(fast: fast, slow: slow)
    let a = randomBytes(3_000_000)
    try await store.writeAll(digestOf(a), a)
    #expect(try await fast.base.contains(digestOf(a)))
    #expect(try await slow.base.contains(digestOf(a)))

    let b = randomBytes(5_000_000)  // only in slow, larger than the pipe's buffer
    try await slow.base.writeAll(digestOf(b), b)
    #expect(try await readRange(store, digestOf(b), offset: 10, limit: 100) == Array(b[10..<110]))
    #expect(try await fast.base.contains(digestOf(b)))
    #expect(try await readRange(store, digestOf(b)) == b)
    #expect(slow.reads.withLock { $0 } == 1)
    #expect(try await store.findMissing([digestOf([9]), digestOf(a)]) == [digestOf([9])])
    #expect(try await readRange(store, digestOf([9])) == nil)
  }

  @Test("fast_slow: a failing fast tier does not fail reads or writes")
  func fastFails() async throws {
    let fast = CountingStore(failWrites: true), slow = CountingStore()
    let store = FastSlowStore(fast: fast, slow: slow)
    let a = randomBytes(2_000_000)
    try await store.writeAll(digestOf(a), a)
    #expect(try await slow.base.contains(digestOf(a)))
    #expect(try await readRange(store, digestOf(a)) == a)
  }

  @Test("size_partitioning routes by size")
  func sizePartitioning() async throws {
    let small = MemoryStore(), large = MemoryStore()
    let store = SizePartitioningStore(threshold: 100, lower: small, upper: large)
    let a = randomBytes(10), b = randomBytes(1000)
    try await store.writeAll(digestOf(a), a)
    try await store.writeAll(digestOf(b), b)
    #expect(small.count == 1 && large.count == 1)
    #expect(try await store.findMissing([digestOf(a), digestOf(b), digestOf([1])]) == [digestOf([1])])
    #expect(try await readRange(store, digestOf(b)) == b)
  }

  @Test("existence_cache remembers positives only")
  func existenceCache() async throws {
    let backend = CountingStore()
    let store = ExistenceCacheStore(backend: backend, maxSeconds: 60)
    let a = randomBytes(10)
    try await backend.base.writeAll(digestOf(a), a)
    let missing = digestOf([7])
    #expect(try await store.findMissing([digestOf(a), missing]) == [missing])
    #expect(try await store.findMissing([digestOf(a)]) == [])
    #expect(backend.findCalls.withLock { $0 } == 1)
    #expect(try await store.findMissing([missing]) == [missing])
    #expect(backend.findCalls.withLock { $0 } == 2)
  }

  @Test("completeness_checking hides results whose blobs were evicted")
  func completeness() async throws {
    let cas = MemoryStore(), ac = MemoryStore()
    let store = CompletenessCheckingStore(backend: ac, cas: cas)
    let out = randomBytes(100), inTree = randomBytes(50)
    try await cas.writeAll(digestOf(out), out)
    try await cas.writeAll(digestOf(inTree), inTree)
    var tree = Tree()
    var root = Directory()
    var node = FileNode()
    node.name = "f"
    node.digest = digestOf(inTree).proto
    root.files = [node]
    tree.root = root
    let treeBytes = tree.serializedBytes()
    try await cas.writeAll(digestOf(treeBytes), treeBytes)
    var result = ActionResult()
    var file = OutputFile()
    file.path = "out"
    file.digest = digestOf(out).proto
    result.outputFiles = [file]
    var dir = OutputDirectory()
    dir.path = "d"
    dir.treeDigest = digestOf(treeBytes).proto
    result.outputDirectories = [dir]
    let key = digestOf(Array("action".utf8))
    try await store.writeAll(key, result.serializedBytes())
    #expect(try await store.readAll(key, maxBytes: 1 << 20) == result.serializedBytes())

    // One output blob evicted → NOT_FOUND for the whole result.
    let evictedCAS = MemoryStore()
    try await evictedCAS.writeAll(digestOf(out), out)
    try await evictedCAS.writeAll(digestOf(treeBytes), treeBytes)
    let partial = CompletenessCheckingStore(backend: ac, cas: evictedCAS)
    #expect(try await partial.readAll(key, maxBytes: 1 << 20) == nil)
    #expect(try await partial.findMissing([key]) == [key])
  }

  @Test("shard spreads by digest, by weight, deterministically")
  func shard() async throws {
    let stores = [MemoryStore(), MemoryStore(), MemoryStore()]
    let store = ShardStore(shards: [(stores[0], 1), (stores[1], 1), (stores[2], 2)])
    var blobs: [[UInt8]] = []
    for i in 0..<400 { blobs.append(Array("blob \(i)".utf8)) }
    for b in blobs { try await store.writeAll(digestOf(b), b) }
    let counts = stores.map(\.count)
    #expect(counts.reduce(0, +) == 400)
    #expect(counts[2] > counts[0] && counts[2] > counts[1])
    #expect(counts.allSatisfy { $0 > 50 })
    #expect(try await store.findMissing(blobs.map(digestOf)) == [])
    #expect(try await readRange(store, digestOf(blobs[17])) == blobs[17])
  }

  @Test("factory shares named stores through ref")
  func refs() async throws {
    let specs: [String: StoreSpec] = [
      "mem": .memory(MemoryStoreSpec()),
      "a": .ref("mem"),
      "b": .existenceCache(backend: .ref("mem"), maxSeconds: 5, maxCount: 10),
    ]
    let stores = try await StoreFactory(specs: specs, home: "/h").makeAll()
    let x = Array("shared".utf8)
    try await stores["a"]!.writeAll(digestOf(x), x)
    #expect(try await stores["b"]!.contains(digestOf(x)))
    #expect(try await stores["mem"]!.contains(digestOf(x)))
  }
}
