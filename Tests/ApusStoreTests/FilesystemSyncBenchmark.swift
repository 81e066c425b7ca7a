import ApusConfig
import ApusProto
import Foundation
import Testing

@testable import ApusStore

/// What each `sync` policy costs, on the disk under `$TMPDIR`. Off by default (it writes
/// ~1 GiB): `APUS_FS_BENCH=1 swift test --skip-build --filter FilesystemSyncBenchmark`.
@Suite(
  "Filesystem sync benchmark", .serialized, .timeLimit(.minutes(10)),
  .enabled(if: ProcessInfo.processInfo.environment["APUS_FS_BENCH"] != nil))
struct FilesystemSyncBenchmark {
  static let count = 2_000

  func seconds(_ body: () async throws -> Void) async rethrows -> Double {
    let start = ContinuousClock.now
    try await body()
    let d = ContinuousClock.now - start
    return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
  }

  @Test(
    "2,000 × 4 KiB writes, one and 16 at a time; a 256 MiB blob",
    arguments: FilesystemStoreSpec.Sync.allCases)
  func smallWrites(sync: FilesystemStoreSpec.Sync) async throws {
    let block = randomBytes(4096)
    let blobs = (0..<Self.count).map { i -> [UInt8] in
      var b = block
      withUnsafeBytes(of: i) { b.replaceSubrange(0..<8, with: $0) }
      return b
    }
    let sequential = try await FilesystemStore.open(
      root: temporaryDirectory(), maxBytes: nil, options: .init(sync: sync))
    let t1 = try await seconds {
      for b in blobs { try await sequential.writeAll(digestOf(b), b) }
    }
    let concurrent = try await FilesystemStore.open(
      root: temporaryDirectory(), maxBytes: nil, options: .init(sync: sync))
    let t2 = try await seconds {
      try await withThrowingTaskGroup(of: Void.self) { group in
        for lane in 0..<16 {
          group.addTask {
            for i in stride(from: lane, to: blobs.count, by: 16) {
              try await concurrent.writeAll(digestOf(blobs[i]), blobs[i])
            }
          }
        }
        try await group.waitForAll()
      }
    }
    // 256 distinct 1 MiB chunks (random bytes one by one are slow in a debug build).
    let megabyte = randomBytes(1 << 20)
    let chunks = (0..<256).map { i -> [UInt8] in
      var c = megabyte
      c[0] = UInt8(i)
      return c
    }
    let bigDigest = digestOf(chunks.flatMap { $0 })
    let t3 = try await seconds {
      try await sequential.write(bigDigest, from: ChunkList(chunks: chunks))
    }
    print(
      "sync=\(sync.rawValue): 4 KiB sequential \(Int(Double(Self.count) / t1)) writes/s, "
        + "16 concurrent \(Int(Double(Self.count) / t2)) writes/s, "
        + "256 MiB blob \(String(format: "%.2f", t3)) s (\(Int(256 / t3)) MiB/s)")
  }

  @Test("one directory fsync")
  func directoryFsync() async throws {
    let root = temporaryDirectory()
    let t = try await seconds {
      for i in 0..<200 {
        FileManager.default.createFile(atPath: "\(root)/f\(i)", contents: nil)
        try FileCalls.syncDirectory(root)
      }
    }
    print("create + directory fsync: \(String(format: "%.2f", t / 200 * 1000)) ms each")
  }
}

/// Chunks already in memory, handed out one by one.
struct ChunkList: AsyncSequence, Sendable {
  typealias Element = ArraySlice<UInt8>
  let chunks: [[UInt8]]
  struct AsyncIterator: AsyncIteratorProtocol {
    var chunks: ArraySlice<[UInt8]>
    mutating func next() async throws -> ArraySlice<UInt8>? { chunks.popFirst()?[...] }
  }
  func makeAsyncIterator() -> AsyncIterator { AsyncIterator(chunks: chunks[...]) }
}
