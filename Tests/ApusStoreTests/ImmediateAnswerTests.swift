import ApusTestSupport
import ApusProto
import Testing

@testable import ApusStore

/// `findMissingNow` / `readAllNow`: the same answers as `findMissing` / `readAll` where a
/// store can give them without waiting, "would wait" everywhere else.
@Suite("Store answers without waiting", .timeLimit(.minutes(1)))
struct ImmediateAnswerTests {
  @Test("a memory store answers at once, as its async calls do")
  func memory() async throws {
    let store = MemoryStore()
    let a = Array("aaa".utf8), b = Array("bbbb".utf8)
    try await store.writeAll(digestOf(a), a)
    try await store.write(digestOf(b), from: FailingChunks(chunks: [Array(b[0..<2]), Array(b[2...])], failAfter: 99))
    #expect(try store.readAllNow(digestOf(a), maxBytes: 10) == .found(a))
    #expect(try store.readAllNow(digestOf(b), maxBytes: 10) == .found(b))
    #expect(try store.readAllNow(digestOf([9]), maxBytes: 10) == .absent)
    #expect(throws: StoreError.self) { try store.readAllNow(digestOf(b), maxBytes: 3) }
    let asked = [digestOf([9]), digestOf(a), digestOf([8])]
    #expect(try store.findMissingNow(asked) == [digestOf([9]), digestOf([8])])
    #expect(try store.findMissingNow(asked) == (try await store.findMissing(asked)))
  }

  @Test("stores that do I/O, and wrappers over them, would wait")
  func wouldWait() async throws {
    let backend = CountingStore()
    let a = Array("aaa".utf8)
    try await backend.writeAll(digestOf(a), a)
    #expect(try backend.readAllNow(digestOf(a), maxBytes: 10) == .wouldWait)
    #expect(try backend.findMissingNow([digestOf(a)]) == nil)
    let verify = VerifyStore(backend: backend)
    #expect(try verify.readAllNow(digestOf(a), maxBytes: 10) == .wouldWait)
    #expect(try verify.findMissingNow([digestOf(a)]) == nil)
    let instrumented = InstrumentedStore(backend, metrics: StoreMetrics(store: "x", factory: RecordingMetrics()))
    #expect(try instrumented.findMissingNow([digestOf(a)]) == nil)
  }

  @Test("an existence cache answers known digests at once, others as its backend does")
  func existenceCache() async throws {
    let backend = CountingStore()
    let a = Array("aaa".utf8)
    try await backend.writeAll(digestOf(a), a)
    let cache = ExistenceCacheStore(backend: backend, maxSeconds: 60)
    #expect(try cache.findMissingNow([digestOf(a)]) == nil)
    #expect(try await cache.findMissing([digestOf(a)]) == [])
    #expect(try cache.findMissingNow([digestOf(a)]) == [])
    #expect(try cache.findMissingNow([digestOf(a), digestOf([1])]) == nil)
    let overMemory = ExistenceCacheStore(backend: MemoryStore(), maxSeconds: 60)
    #expect(try overMemory.findMissingNow([digestOf([1])]) == [digestOf([1])])
  }

  @Test("instrumented: answers counted as hits, misses and bytes, like the async calls")
  func instrumented() async throws {
    let recorded = RecordingMetrics()
    let store = InstrumentedStore(MemoryStore(), metrics: StoreMetrics(store: "cas", factory: recorded))
    let a = Array("aaa".utf8)
    try await store.writeAll(digestOf(a), a)
    #expect(try store.readAllNow(digestOf(a), maxBytes: 10) == .found(a))
    #expect(try store.readAllNow(digestOf([1]), maxBytes: 10) == .absent)
    #expect(try store.findMissingNow([digestOf(a), digestOf([2])]) == [digestOf([2])])
    let cas = [("store", "cas")]
    #expect(recorded.value("apus_store_hits_total", cas) == 2)
    #expect(recorded.value("apus_store_misses_total", cas) == 2)
    #expect(recorded.value("apus_store_read_bytes_total", cas) == 3)
  }
}
