import ApusTestSupport
import ApusConfig
import ApusProto
import Foundation
import Testing

@testable import ApusStore

/// A backend that fails every call, to count errors.
struct BrokenStore: BlobStore {
  func findMissing(_ digests: [BlobDigest]) async throws -> [BlobDigest] { throw StoreError(.internal, "broken") }
  func read(
    _ digest: BlobDigest, offset: Int64, limit: Int64?, into sink: (ArraySlice<UInt8>) async throws -> Void
  ) async throws -> Bool { throw StoreError(.internal, "broken") }
  func write<Chunks: AsyncSequence<ArraySlice<UInt8>, any Error>>(_ digest: BlobDigest, from chunks: Chunks) async throws {
    throw StoreError(.internal, "broken")
  }
}

@Suite("Store metrics and usage", .timeLimit(.minutes(1)))
struct InstrumentedStoreTests {
  let recorded = RecordingMetrics()
  let cas = [("store", "cas")]

  func value(_ label: String, _ extra: [(String, String)] = []) -> Double? {
    recorded.value(label, cas + extra)
  }

  @Test("counts hits, misses, bytes and evictions of the store behind it")
  func counts() async throws {
    let metrics = StoreMetrics(store: "cas", factory: recorded)
    let store = InstrumentedStore(MemoryStore(limits: .init(maxCount: 2), evictions: metrics.evictions), metrics: metrics)
    let a = Array("aaa".utf8), b = Array("bbbbb".utf8), c = Array("c".utf8)
    try await store.writeAll(digestOf(a), a)
    try await store.write(digestOf(b), from: FailingChunks(chunks: [Array(b[0..<2]), Array(b[2...])], failAfter: 3))
    #expect(value("apus_store_written_bytes_total") == 8)

    #expect(try await readRange(store, digestOf(a)) == a)
    #expect(try await readRange(store, digestOf(b), offset: 1, limit: 3) == Array("bbb".utf8))
    #expect(try await readRange(store, digestOf(c)) == nil)
    #expect(value("apus_store_hits_total") == 2)
    #expect(value("apus_store_misses_total") == 1)
    #expect(value("apus_store_read_bytes_total") == 6)

    #expect(try await store.findMissing([digestOf(a), digestOf(b), digestOf(c)]) == [digestOf(c)])
    #expect(value("apus_store_hits_total") == 4)
    #expect(value("apus_store_misses_total") == 2)

    // A third entry over max_count 2 evicts the least recently used.
    try await store.writeAll(digestOf(c), c)
    #expect(value("apus_store_evictions_total") == 1)
    for operation in ["read", "write", "find_missing"] {
      #expect(value("apus_store_errors_total", [("operation", operation)]) == 0)
    }
  }

  @Test("counts the store's errors by operation, not the caller's")
  func errors() async throws {
    let broken = InstrumentedStore(BrokenStore(), metrics: StoreMetrics(store: "cas", factory: recorded))
    let d = digestOf([1])
    _ = try? await broken.findMissing([d])
    _ = try? await broken.read(d, offset: 0, limit: nil) { _ in }
    _ = try? await broken.writeAll(d, [1])
    for operation in ["read", "write", "find_missing"] {
      #expect(value("apus_store_errors_total", [("operation", operation)]) == 1, "\(operation)")
    }

    // A client that goes away mid-read or mid-upload is not a store error.
    let healthy = InstrumentedStore(MemoryStore(), metrics: StoreMetrics(store: "cas", factory: recorded))
    let x = randomBytes(100)
    try await healthy.writeAll(digestOf(x), x)
    struct Gone: Error {}
    await #expect(throws: Gone.self) { _ = try await healthy.read(digestOf(x), offset: 0, limit: nil) { _ in throw Gone() } }
    await #expect(throws: FailingChunks.Disconnected.self) {
      try await healthy.write(digestOf(randomBytes(10)), from: FailingChunks(chunks: [[1, 2]], failAfter: 1))
    }
    #expect(value("apus_store_errors_total", [("operation", "read")]) == 1)
    #expect(value("apus_store_errors_total", [("operation", "write")]) == 1)
    #expect(value("apus_store_written_bytes_total") == 102)
  }

  @Test("the factory instruments named stores and reports what memory and filesystem stores hold")
  func factoryUsage() async throws {
    let root = temporaryDirectory()
    let config = try ApusConfiguration.parse(
      Data(
        #"""
        { stores: {
            cas: { memory: { max_count: 2 } },
            tiered: { fast_slow: { fast: { filesystem: { path: "\#(root)/fs" } }, slow: { ref: "cas" } } },
            remote: { s3: { endpoint: "http://127.0.0.1:1", bucket: "b", access_key_id: "k", secret_access_key: "s" } },
            split: { size_partitioning: { threshold_bytes: 10, lower: { ref: "cas" }, upper: { ref: "tiered" } } },
          },
          servers: [ { listen: "127.0.0.1:0", instances: { "": { cas: "cas" } } } ] }
        """#.utf8), environment: [:])
    let factory = StoreFactory(specs: config.stores, home: "/h", metrics: recorded)
    let stores = try await factory.makeAll()
    #expect(stores["cas"] is InstrumentedStore)
    let small = Array("small".utf8), large = randomBytes(1000)
    try await stores["split"]?.writeAll(digestOf(small), small)
    try await stores["split"]?.writeAll(digestOf(large), large)

    let usage = factory.usage()
    #expect(usage["cas"] == StoreUsage(entries: 2, bytes: 1005))
    #expect(usage["tiered"] == StoreUsage(entries: 1, bytes: 1000))
    #expect(usage["split"] == StoreUsage(entries: 3, bytes: 2005))
    #expect(usage["remote"] == nil)

    factory.updateGauges()
    #expect(value("apus_store_entries") == 2)
    #expect(value("apus_store_bytes") == 1005)
    #expect(recorded.value("apus_store_bytes", [("store", "tiered")]) == 1000)
    // The writes reached cas through refs: counted there too.
    #expect(value("apus_store_written_bytes_total") == 1005)
    #expect(recorded.value("apus_store_written_bytes_total", [("store", "split")]) == 1005)
    #expect(recorded.value("apus_circuit_breaker_open", [("backend", "s3 http://127.0.0.1:1/b")]) == 0)
    await factory.close()
  }
}
