import ApusConfig
import ApusProto
import ApusRPC
import Foundation
import Testing

@testable import ApusStore

/// `compression: zstd` on the filesystem store: `.zst` files, ranged reads that decode,
/// the stored frame handed out as is, restarts, mixed stores and on-disk accounting.
@Suite("FilesystemStore compression", .timeLimit(.minutes(3)))
struct FilesystemCompressionTests {
  static let zstd = FilesystemStore.Options(compression: StoreCompression(algorithm: .zstd, level: 3))

  /// Compressible content: text-like lines with some variety.
  static func text(_ n: Int) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(n + 64)
    var i = 0
    while out.count < n {
      out += Array("line \(i) of a build log: compiling module \(i % 97)\n".utf8)
      i += 1
    }
    return Array(out.prefix(n))
  }

  func files(_ root: String) -> [String] {
    (FileManager.default.enumerator(atPath: "\(root)/content")?.allObjects as? [String] ?? [])
      .filter { $0.count > 3 }
  }

  func decompress(_ frame: [UInt8], limit: Int) throws -> [UInt8] {
    let d = try ZstdDecompressor(outputLimit: limit)
    d.push(frame)
    var out: [UInt8] = []
    while let chunk = try d.next(maxBytes: 1 << 20) { out += chunk }
    try d.finish()
    return out
  }

  @Test("a blob is stored as a smaller .zst file and reads back whole")
  func roundTrip() async throws {
    let root = temporaryDirectory()
    let store = try await FilesystemStore.open(root: root, maxBytes: nil, options: Self.zstd)
    let content = Self.text(3 << 20)
    let d = digestOf(content)
    try await store.write(d, from: FailingChunks(chunks: stride(from: 0, to: content.count, by: 100_000).map {
      Array(content[$0..<min($0 + 100_000, content.count)])
    }, failAfter: 1000))
    let names = files(root)
    #expect(names.count == 1 && names[0].hasSuffix(".zst"))
    #expect(store.totalBytes < Int64(content.count) / 4, "on disk: \(store.totalBytes)")
    #expect(try await readRange(store, d) == content)
  }

  static let rangeCases: [(Int64, Int64?)] = [
    (0, nil), (1, nil), (300_000, 1), (262_143, 262_146), (1_000_000, 5), (3_000_000, nil),
    (2_999_999, 10), (123, 0),
  ]

  @Test("offsets and limits count uncompressed bytes", arguments: rangeCases)
  func ranges(offset: Int64, limit: Int64?) async throws {
    let store = try await FilesystemStore.open(root: temporaryDirectory(), maxBytes: nil, options: Self.zstd)
    let content = Self.text(3_000_000)
    let d = digestOf(content)
    try await store.writeAll(d, content)
    let start = Int(min(offset, Int64(content.count)))
    let end = limit.map { min(content.count, start + Int($0)) } ?? content.count
    #expect(try await readRange(store, d, offset: offset, limit: limit) == Array(content[start..<end]))
  }

  @Test("the stored frame is handed out as is; uncompressed entries are not")
  func storedFrame() async throws {
    let root = temporaryDirectory()
    let plain = try await FilesystemStore.open(root: root, maxBytes: nil)
    let old = Self.text(200_000)
    try await plain.writeAll(digestOf(old), old)
    let store = try await FilesystemStore.open(root: root, maxBytes: nil, options: Self.zstd)
    let new = Self.text(500_000) + [1, 2, 3]
    try await store.writeAll(digestOf(new), new)
    var frame: [UInt8] = []
    #expect(try await store.readCompressed(digestOf(new)) { frame += $0 })
    #expect(frame.count < new.count / 4)
    #expect(try decompress(frame, limit: new.count) == new)
    #expect(try await !store.readCompressed(digestOf(old)) { _ in Issue.record("sink called") })
    #expect(try await !store.readCompressed(digestOf([9])) { _ in Issue.record("sink called") })
    // Through a wrapper and the instrumented store too.
    let wrapped = InstrumentedStore(
      VerifyStore(backend: store), metrics: StoreMetrics(store: "t"))
    var again: [UInt8] = []
    #expect(try await wrapped.readCompressed(digestOf(new)) { again += $0 })
    #expect(again == frame)
  }

  @Test("mixed store: files written before compression stay readable, and after a restart")
  func mixed() async throws {
    let root = temporaryDirectory()
    let plain = try await FilesystemStore.open(root: root, maxBytes: nil)
    let old = Self.text(100_000), oldValue = Array("an action result".utf8)
    let key = digestOf(Array("an action".utf8))  // an action-cache key: not the value's hash
    try await plain.writeAll(digestOf(old), old)
    try await plain.writeAll(key, oldValue)
    let zstd = try await FilesystemStore.open(root: root, maxBytes: nil, options: Self.zstd)
    let new = Self.text(150_000) + [7]
    try await zstd.writeAll(digestOf(new), new)
    let newKey = digestOf(Array("another action".utf8))
    let newValue = Self.text(10_000)
    try await zstd.writeAll(newKey, newValue)
    #expect(files(root).filter { $0.hasSuffix(".zst") }.count == 2)
    // A restart in either mode finds all four.
    for options in [Self.zstd, FilesystemStore.Options(verifyReads: true)] {
      let reopened = try await FilesystemStore.open(root: root, maxBytes: nil, options: options)
      #expect(reopened.count == 4)
      #expect(try await readRange(reopened, digestOf(old)) == old)
      #expect(try await readRange(reopened, key) == oldValue)
      #expect(try await readRange(reopened, digestOf(new)) == new)
      #expect(try await readRange(reopened, newKey) == newValue)
      #expect(try await readRange(reopened, newKey, offset: 9_990) == Array(newValue[9_990...]))
    }
  }

  @Test("max_bytes counts the compressed files")
  func maxBytesOnDisk() async throws {
    let root = temporaryDirectory()
    // Ten 1 MB blobs compress to a few dozen KB each: all fit in 1 MB on disk.
    let store = try await FilesystemStore.open(root: root, maxBytes: 1_000_000, options: Self.zstd)
    var digests: [BlobDigest] = []
    for i in 0..<10 {
      let content = Array("blob \(i)\n".utf8) + Self.text(1_000_000)
      digests.append(digestOf(content))
      try await store.writeAll(digests[i], content)
    }
    #expect(store.count == 10)
    let onDisk = files(root).reduce(Int64(0)) { sum, name in
      sum + ((try? FileManager.default.attributesOfItem(atPath: "\(root)/content/\(name)")[.size] as? Int64) ?? 0)
    }
    #expect(store.totalBytes == onDisk && onDisk <= 1_000_000)
    // Incompressible blobs still evict by what they take.
    let random = randomBytes(600_000)
    try await store.writeAll(digestOf(random), random)
    #expect(store.totalBytes <= 1_000_000)
    #expect(try await store.contains(digestOf(random)))
    #expect(try await !store.contains(digests[0]))
  }

  @Test("verification and reads find a damaged .zst file and quarantine it")
  func damage() async throws {
    let root = temporaryDirectory()
    var options = Self.zstd
    options.verifyOnStart = true
    let store = try await FilesystemStore.open(root: root, maxBytes: nil, options: options)
    let good = Self.text(400_000), bad = Self.text(300_000) + [42]
    try await store.writeAll(digestOf(good), good)
    try await store.writeAll(digestOf(bad), bad)
    // Flip a byte inside the frame of `bad` (the trailer stays valid).
    let path = store.path(digestOf(bad), .zstd)
    var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
    bytes[bytes.count / 2] ^= 0xFF
    try Data(bytes).write(to: URL(fileURLWithPath: path))
    let reopened = try await FilesystemStore.open(root: root, maxBytes: nil, options: options)
    #expect(reopened.count == 2)
    let report = await reopened.verifyContents()
    #expect(report == FilesystemStore.VerifyReport(checked: 2, quarantined: 1))
    #expect(try await readRange(reopened, digestOf(good)) == good)
    #expect(try await readRange(reopened, digestOf(bad)) == nil)

    // A read decoding a damaged frame fails with DATA_LOSS and removes it.
    try await store.writeAll(digestOf(bad), bad)
    var again = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
    again[again.count / 3] ^= 0xFF
    try Data(again).write(to: URL(fileURLWithPath: path))
    let fresh = try await FilesystemStore.open(root: root, maxBytes: nil, options: Self.zstd)
    do {
      _ = try await readRange(fresh, digestOf(bad))
      Issue.record("damaged frame read without error")
    } catch let error as StoreError {
      #expect(error.code == .dataLoss)
    }
    #expect(try await !fresh.contains(digestOf(bad)))
  }

  @Test("a truncated .zst file is quarantined by the start scan")
  func truncated() async throws {
    let root = temporaryDirectory()
    let store = try await FilesystemStore.open(root: root, maxBytes: nil, options: Self.zstd)
    let content = Self.text(200_000)
    try await store.writeAll(digestOf(content), content)
    let path = store.path(digestOf(content), .zstd)
    let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
    try bytes.prefix(bytes.count - 10).write(to: URL(fileURLWithPath: path))
    let reopened = try await FilesystemStore.open(root: root, maxBytes: nil, options: Self.zstd)
    #expect(reopened.count == 0)
    #expect(FileManager.default.fileExists(atPath: "\(root)/quarantine/\((path as NSString).lastPathComponent)"))
  }

  @Test("every wrapper hands out the stored frame of the store that holds the blob")
  func wrappersForward() async throws {
    let zstd = try await FilesystemStore.open(root: temporaryDirectory(), maxBytes: nil, options: Self.zstd)
    let content = Self.text(100_000)
    let d = digestOf(content)
    try await zstd.writeAll(d, content)
    var expected: [UInt8] = []
    #expect(try await zstd.readCompressed(d) { expected += $0 })
    let memory = MemoryStore()
    let wrappers: [(String, any BlobStore)] = [
      ("fast_slow", FastSlowStore(fast: zstd, slow: memory)),
      ("size_partitioning", SizePartitioningStore(threshold: 1000, lower: memory, upper: zstd)),
      ("shard", ShardStore(shards: [(zstd, 1)])),
      ("verify", VerifyStore(backend: zstd)),
      ("existence_cache", ExistenceCacheStore(backend: zstd, maxSeconds: 60)),
      ("instrumented", InstrumentedStore(zstd, metrics: StoreMetrics(store: "w"))),
    ]
    for (name, store) in wrappers {
      var frame: [UInt8] = []
      #expect(try await store.readCompressed(d) { frame += $0 }, "\(name)")
      #expect(frame == expected, "\(name)")
    }
    // A store that keeps blobs as they are has nothing to hand out.
    try await memory.writeAll(d, content)
    #expect(try await !memory.readCompressed(d) { _ in })
    #expect(try await !FastSlowStore(fast: memory, slow: zstd).readCompressed(d) { _ in })
  }

  @Test("a blob left in two layouts by a crash keeps the newer file")
  func duplicates() async throws {
    let root = temporaryDirectory()
    let content = Self.text(50_000)
    let d = digestOf(content)
    let plain = try await FilesystemStore.open(root: root, maxBytes: nil)
    try await plain.writeAll(d, content)
    let plainPath = plain.path(d)
    let saved = try Data(contentsOf: URL(fileURLWithPath: plainPath))
    let zstd = try await FilesystemStore.open(root: root, maxBytes: nil, options: Self.zstd)
    try await zstd.writeAll(d, content)
    #expect(!FileManager.default.fileExists(atPath: plainPath), "the rewrite removes the plain file")
    // As if the process died between the rename and the unlink: the plain file is back, older.
    try saved.write(to: URL(fileURLWithPath: plainPath))
    try FileManager.default.setAttributes(
      [.modificationDate: Date(timeIntervalSinceNow: -3600)], ofItemAtPath: plainPath)
    let reopened = try await FilesystemStore.open(root: root, maxBytes: nil)
    #expect(reopened.count == 1)
    #expect(!FileManager.default.fileExists(atPath: plainPath))
    #expect(try await readRange(reopened, d) == content)
  }

  @Test("the window follows the blob's size, up to the level's")
  func windows() {
    #expect(StoredZstd.windowLog(forSize: 0, level: 3) == 10)
    #expect(StoredZstd.windowLog(forSize: 150, level: 3) == 10)
    #expect(StoredZstd.windowLog(forSize: 5000, level: 3) == 13)
    #expect(StoredZstd.windowLog(forSize: 1 << 20, level: 3) == 20)
    #expect(StoredZstd.windowLog(forSize: 1 << 30, level: 3) == 21)
    #expect(StoredZstd.windowLog(forSize: 1 << 30, level: 19) == 21)
    #expect(StoredZstd.windowLog(forSize: 1 << 30, level: 1) == 19)
    #expect(StoredZstd.windowLog(forSize: 1 << 30, level: 2) == 20)
  }

  @Test("the trailer round-trips and refuses what does not fit the file")
  func trailer() {
    let t = ZstdEntryTrailer(storedLength: 1000, contentLength: 5000, sha256: Array(repeating: 7, count: 32))
    #expect(t.bytes.count == ZstdEntryTrailer.byteCount)
    #expect(ZstdEntryTrailer(t.bytes, fileSize: 1056) == t)
    #expect(ZstdEntryTrailer(t.bytes, fileSize: 1057) == nil)
    var bad = t.bytes
    bad[55] ^= 1
    #expect(ZstdEntryTrailer(bad, fileSize: 1056) == nil)
  }
}
