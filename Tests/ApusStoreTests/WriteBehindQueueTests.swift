import ApusProto
import Foundation
import Logging
import Synchronization
import Testing

@testable import ApusStore

/// A memory store that can be switched off: every call then fails with UNAVAILABLE, as a
/// remote store does during an outage.
final class SwitchableStore: BlobStore {
  let base = MemoryStore()
  let down = Mutex(false)
  let writes = Mutex(0)

  private func check() throws {
    if down.withLock({ $0 }) { throw StoreError(.unavailable, "the slow tier is down") }
  }
  func findMissing(_ digests: [BlobDigest]) async throws -> [BlobDigest] {
    try check()
    return try await base.findMissing(digests)
  }
  func read(
    _ digest: BlobDigest, offset: Int64, limit: Int64?, into sink: (ArraySlice<UInt8>) async throws -> Void
  ) async throws -> Bool {
    try check()
    return try await base.read(digest, offset: offset, limit: limit, into: sink)
  }
  func write<Chunks: AsyncSequence<ArraySlice<UInt8>, any Error>>(_ digest: BlobDigest, from chunks: Chunks) async throws {
    try check()
    try await base.write(digest, from: chunks)
    writes.withLock { $0 += 1 }
  }
}

/// The digests a queue reported settled.
final class Settled: Sendable {
  let list = Mutex<[BlobDigest]>([])
}

@Suite("Write-behind queue and fast_slow write policies", .timeLimit(.minutes(2)))
struct WriteBehindQueueTests {
  let logger = Logger(label: "test")

  func open(_ dir: String, maxBytes: Int64 = 1 << 30, maxEntries: Int = 1000) async throws -> (
    WriteBehindQueue, [BlobDigest]
  ) {
    try await WriteBehindQueue.open(
      directory: dir, name: "test", maxBytes: maxBytes, maxEntries: maxEntries, concurrency: 2, logger: logger)
  }

  @Test("bounded by entries and bytes; a blob already queued is not counted twice; release frees room")
  func bound() async throws {
    let (queue, _) = try await open(temporaryDirectory() + "/q", maxBytes: 250, maxEntries: 3)
    let a = BlobDigest(hashBytes: [UInt8](repeating: 1, count: 32), sizeBytes: 100)
    let b = BlobDigest(hashBytes: [UInt8](repeating: 2, count: 32), sizeBytes: 100)
    let c = BlobDigest(hashBytes: [UInt8](repeating: 3, count: 32), sizeBytes: 100)
    let tiny = (4...6).map { BlobDigest(hashBytes: [UInt8](repeating: UInt8($0), count: 32), sizeBytes: 1) }
    #expect(try await queue.reserve(a))
    #expect(try await queue.reserve(a), "a second upload of a blob not yet in the fast tier")
    await queue.release(a)
    #expect(queue.depth == (1, 100), "one upload of it is still in progress")
    #expect(queue.commit(a))
    #expect(try await queue.reserve(a) == false, "queued already")
    #expect(try await queue.reserve(b))
    let error = await #expect(throws: StoreError.self) { try await queue.reserve(c) }
    #expect(error?.code == .resourceExhausted)
    #expect(error?.message.contains("full") == true)
    #expect(queue.depth.bytes == 200)
    await queue.release(b)
    #expect(queue.depth == (1, 100))
    #expect(try await queue.reserve(c))
    #expect(try await queue.reserve(tiny[0]))
    #expect(queue.depth == (3, 201))
    let full = await #expect(throws: StoreError.self) { try await queue.reserve(tiny[1]) }
    #expect(full?.message.contains("3 blobs") == true, "a 4th entry")
  }

  @Test("the journal survives a restart: what was not copied is queued again, in order; torn lines are skipped")
  func restart() async throws {
    let dir = temporaryDirectory() + "/q"
    let digests = (1...4).map { BlobDigest(hashBytes: [UInt8](repeating: UInt8($0), count: 32), sizeBytes: Int64($0)) }
    do {
      let (queue, restored) = try await open(dir)
      #expect(restored.isEmpty)
      for d in digests {
        #expect(try await queue.reserve(d))
        queue.commit(d)
      }
      // Copy only the second one, then "crash".
      let copied = Settled()
      let wanted = digests[1]
      try await withThrowingDiscardingTaskGroup { group in
        group.addTask {
          await queue.run(
            copy: { d in
              guard d == wanted else { throw StoreError(.unavailable, "down") }
              return .copied
            },
            settled: { d in copied.list.withLock { $0.append(d) } })
        }
        while copied.list.withLock({ $0.isEmpty }) { try await Task.sleep(for: .milliseconds(10)) }
        group.cancelAll()
      }
      #expect(copied.list.withLock { $0 } == [digests[1]])
    }
    // A write cut short by a crash leaves a partial last line.
    let handle = try #require(FileHandle(forWritingAtPath: dir + "/queue.journal"))
    try handle.seekToEnd()
    try handle.write(contentsOf: Array("+0a1b".utf8))
    try handle.close()
    let (queue, restored) = try await open(dir)
    #expect(restored == [digests[0], digests[2], digests[3]])
    #expect(queue.depth == (3, 1 + 3 + 4))
    #expect(try await queue.reserve(digests[2]) == false, "restored entries count as queued")
  }

  @Test("async: acknowledged from the fast tier, pinned there, copied once the slow tier is back")
  func asyncWrite() async throws {
    let root = temporaryDirectory()
    let fast = try await FilesystemStore.open(root: root + "/fast", maxBytes: 3000, name: "fast")
    let slow = SwitchableStore()
    slow.down.withLock { $0 = true }
    let (queue, _) = try await open(root + "/q")
    let store = FastSlowStore(fast: fast, slow: slow, policy: .async(queue))
    let blobs = (0..<5).map { _ in randomBytes(1000) }
    await withDiscardingTaskGroup { group in
      group.addTask { await store.runWriteBehind() }
      for blob in blobs { try? await store.writeAll(digestOf(blob), blob) }
      group.cancelAll()
    }
    // Acknowledged while the slow tier is down; over the fast tier's 3000 bytes, because
    // queued blobs are pinned, and present for FindMissingBlobs.
    #expect(queue.depth.entries == 5)
    #expect(fast.totalBytes == 5000)
    #expect(try await store.findMissing(blobs.map(digestOf)).isEmpty)
    #expect(try await readRange(store, digestOf(blobs[0])) == blobs[0])
    // The slow tier comes back: the queue drains and the pins go.
    slow.down.withLock { $0 = false }
    try await withThrowingDiscardingTaskGroup { group in
      group.addTask { await store.runWriteBehind() }
      while queue.depth.entries > 0 { try await Task.sleep(for: .milliseconds(20)) }
      group.cancelAll()
    }
    #expect(try await slow.base.findMissing(blobs.map(digestOf)).isEmpty)
    try await fast.writeAll(digestOf([1, 2, 3]), [1, 2, 3])
    #expect(fast.totalBytes <= 3000, "unpinned entries are evicted again")
  }

  @Test("sync: a blob the slow tier refused is not kept in the fast tier")
  func syncWriteFailure() async throws {
    let fast = MemoryStore()
    let slow = SwitchableStore()
    let store = FastSlowStore(fast: fast, slow: slow)
    let ok = randomBytes(100), refused = randomBytes(100)
    try await store.writeAll(digestOf(ok), ok)
    slow.down.withLock { $0 = true }
    let error = await #expect(throws: StoreError.self) { try await store.writeAll(digestOf(refused), refused) }
    #expect(error?.code == .unavailable)
    #expect(try await fast.findMissing([digestOf(ok), digestOf(refused)]) == [digestOf(refused)])
    // While the slow tier is down, answers come from the fast tier alone.
    #expect(try await store.findMissing([digestOf(ok), digestOf(refused)]) == [digestOf(refused)])
    #expect(try await readRange(store, digestOf(refused)) == nil)
    #expect(try await readRange(store, digestOf(ok)) == ok)
    slow.down.withLock { $0 = false }
    #expect(try await store.findMissing([digestOf(refused)]) == [digestOf(refused)])
  }
}
