import ApusConfig
import ApusProto
import Foundation
import Testing

@testable import ApusStore

/// `n` random bytes from the kernel in one call: byte-by-byte generation takes seconds per
/// megabyte in a debug build.
private func noise(_ n: Int) -> [UInt8] {
  guard n > 0, let urandom = FileHandle(forReadingAtPath: "/dev/urandom") else { return [] }
  defer { try? urandom.close() }
  return Array(urandom.readData(ofLength: n))
}

/// Disk full, damaged files and durability options of the filesystem store.
@Suite("Filesystem store durability", .timeLimit(.minutes(3)))
struct FilesystemDurabilityTests {
  typealias Options = FilesystemStore.Options

  func contentFile(_ root: String, _ d: BlobDigest, sealed: Bool = false) -> String {
    "\(root)/content/\(d.hashHex.prefix(2))/\(d.hashHex)-\(d.sizeBytes)\(sealed ? ".sealed" : "")"
  }

  func quarantined(_ root: String) -> Set<String> {
    Set((try? FileManager.default.contentsOfDirectory(atPath: "\(root)/quarantine")) ?? [])
  }

  func storeError(_ body: () async throws -> Void) async -> StoreError? {
    do {
      try await body()
      return nil
    } catch let error as StoreError {
      return error
    } catch {
      Issue.record("unexpected error \(error)")
      return nil
    }
  }

  // MARK: - Disk full

  @Test("a full disk evicts old entries to make room", .enabled(if: Tmpfs.canMount))
  func fullDiskEvicts() async throws {
    try await Tmpfs.with(bytes: 4 << 20) { root in
      let store = try await FilesystemStore.open(root: root, maxBytes: nil, name: "cas")
      let blobs = (0..<12).map { _ in noise(700_000) }
      for b in blobs { try await store.writeAll(digestOf(b), b) }
      // 12 × 700 kB never fit in 4 MiB: the oldest went, the newest are all there.
      let missing = try await store.findMissing(blobs.map(digestOf))
      #expect(missing.contains(digestOf(blobs[0])))
      #expect(store.count < 12 && store.count >= 3)
      for b in blobs.suffix(3) { #expect(try await readRange(store, digestOf(b)) == b) }
      #expect(try FileManager.default.contentsOfDirectory(atPath: "\(root)/tmp").isEmpty)
    }
  }

  @Test(
    "a blob bigger than the disk is refused naming the store, not a path",
    .enabled(if: Tmpfs.canMount))
  func fullDiskRefuses() async throws {
    try await Tmpfs.with(bytes: 2 << 20) { root in
      let store = try await FilesystemStore.open(root: root, maxBytes: nil, name: "cas")
      let small = noise(500_000)
      try await store.writeAll(digestOf(small), small)
      let big = noise(3 << 20)
      let error = await storeError {
        try await store.write(digestOf(big), from: FailingChunks(chunks: [big], failAfter: 2))
      }
      #expect(
        error == StoreError(.resourceExhausted, "filesystem store \"cas\": no space left on device")
      )
      #expect(try await store.findMissing([digestOf(big)]) == [digestOf(big)])
      #expect(try FileManager.default.contentsOfDirectory(atPath: "\(root)/tmp").isEmpty)
      // Everything was evicted trying; the store still works once there is room.
      let after = noise(100_000)
      try await store.writeAll(digestOf(after), after)
      #expect(try await readRange(store, digestOf(after)) == after)
    }
  }

  @Test("min_free_bytes evicts before the disk fills", .enabled(if: Tmpfs.canMount))
  func headroom() async throws {
    try await Tmpfs.with(bytes: 8 << 20) { root in
      let store = try await FilesystemStore.open(
        root: root, maxBytes: nil, name: "cas", options: Options(minFreeBytes: 4 << 20))
      for _ in 0..<10 {
        let b = noise(500_000)
        try await store.writeAll(digestOf(b), b)
        // Before each write the store made room for it plus 4 MiB; the write then used 500 kB.
        #expect(Tmpfs.available(root) >= (4 << 20) - 600_000)
      }
      #expect(store.count < 10)
    }
  }

  // MARK: - Sync policies

  @Test("every sync policy stores the same bytes", arguments: FilesystemStoreSpec.Sync.allCases)
  func syncPolicies(sync: FilesystemStoreSpec.Sync) async throws {
    let root = temporaryDirectory()
    let store = try await FilesystemStore.open(
      root: root, maxBytes: 3_000_000, options: Options(sync: sync))
    let blobs = [
      noise(0), noise(1), noise(4096), noise(1_500_000),
      noise(1_400_000),
    ]
    try await withThrowingTaskGroup(of: Void.self) { group in
      for b in blobs { group.addTask { try await store.writeAll(digestOf(b), b) } }
      try await group.waitForAll()
    }
    for b in blobs {
      guard try await store.contains(digestOf(b)) else { continue }
      #expect(
        try Array(Data(contentsOf: URL(fileURLWithPath: contentFile(root, digestOf(b))))) == b)
      #expect(try await readRange(store, digestOf(b)) == b)
    }
    #expect(store.totalBytes <= 3_000_000)
    let reopened = try await FilesystemStore.open(root: root, maxBytes: nil)
    #expect(reopened.count == store.count)
  }

  // MARK: - Damaged files

  @Test("files that cannot be whole are quarantined at start")
  func quarantineAtStart() async throws {
    let root = temporaryDirectory()
    let good = noise(10_000)
    let truncated = noise(10_000)
    let emptied = noise(5_000)
    let oversized = noise(3_000)
    let blobs = [good, truncated, emptied, oversized]
    do {
      let store = try await FilesystemStore.open(root: root, maxBytes: nil)
      for b in blobs { try await store.writeAll(digestOf(b), b) }
    }
    try Data(truncated.prefix(4_000)).write(
      to: URL(fileURLWithPath: contentFile(root, digestOf(truncated))))
    try Data().write(to: URL(fileURLWithPath: contentFile(root, digestOf(emptied))))
    try Data(oversized + [0]).write(
      to: URL(fileURLWithPath: contentFile(root, digestOf(oversized))))
    let reopened = try await FilesystemStore.open(root: root, maxBytes: nil)
    #expect(reopened.count == 1)
    #expect(reopened.totalBytes == 10_000)
    #expect(try await reopened.findMissing(blobs.map(digestOf)) == blobs.dropFirst().map(digestOf))
    #expect(
      quarantined(root) == Set(blobs.dropFirst().map { "\(digestOf($0).hashHex)-\($0.count)" }))
    #expect(try await readRange(reopened, digestOf(good)) == good)
  }

  @Test("a read stops at the digest's size and fails cleanly on a short file")
  func shortRead() async throws {
    let root = temporaryDirectory()
    let store = try await FilesystemStore.open(root: root, maxBytes: nil, name: "cas")
    let data = noise(600_000)
    let d = digestOf(data)
    try await store.writeAll(d, data)
    let file = contentFile(root, d)
    // Longer than its digest: never served (the size no longer matches).
    try Data(data + [1, 2, 3]).write(to: URL(fileURLWithPath: file))
    var received: [UInt8] = []
    let long = await storeError {
      _ = try await store.read(d, offset: 0, limit: nil) { received.append(contentsOf: $0) }
    }
    #expect(long?.code == .dataLoss)
    #expect(received.isEmpty)
    #expect(try await store.findMissing([d]) == [d])
    #expect(quarantined(root) == ["\(d.hashHex)-600000"])

    // Truncated after the write: DATA_LOSS, no path, entry dropped.
    try await store.writeAll(d, data)
    try Data(data.prefix(300_000)).write(to: URL(fileURLWithPath: file))
    let short = await storeError { _ = try await readRange(store, d) }
    #expect(short?.code == .dataLoss)
    #expect(short?.message.hasPrefix("filesystem store \"cas\": ") == true)
    #expect(short?.message.contains(root) == false)
    #expect(try await store.findMissing([d]) == [d])
    #expect(!FileManager.default.fileExists(atPath: file))
  }

  // MARK: - Action-cache entries

  @Test("action-cache values get a trailer that is checked on read and at start")
  func sealedEntries() async throws {
    let root = temporaryDirectory()
    let key = digestOf(noise(140))  // an action digest: its size is not the value's
    let value = noise(321)
    let other = digestOf(noise(150))
    do {
      let store = try await FilesystemStore.open(
        root: root, maxBytes: nil, options: Options(content: .actionCache))
      try await store.writeAll(key, value)
      try await store.writeAll(other, value)
      #expect(try await readRange(store, key) == value)
      #expect(try await readRange(store, key, offset: 300, limit: 5) == Array(value[300..<305]))
      #expect(store.totalBytes == 2 * (321 + 48))
    }
    let file = contentFile(root, key, sealed: true)
    let onDisk = try Array(Data(contentsOf: URL(fileURLWithPath: file)))
    #expect(onDisk.count == 321 + 48)
    #expect(Array(onDisk.prefix(321)) == value)
    #expect(Array(onDisk.suffix(8)) == Array("APUSEND1".utf8))

    let reopened = try await FilesystemStore.open(
      root: root, maxBytes: nil, options: Options(content: .actionCache))
    #expect(try await readRange(reopened, key) == value)

    // A flipped bit fails the read (the checksum is always checked for sealed entries).
    var flipped = onDisk
    flipped[10] ^= 0x04
    try Data(flipped).write(to: URL(fileURLWithPath: file))
    let error = await storeError { _ = try await readRange(reopened, key) }
    #expect(error?.code == .dataLoss)
    #expect(try await reopened.findMissing([key]) == [key])

    // A truncated one is quarantined at start.
    let otherFile = contentFile(root, other, sealed: true)
    try Data(try Data(contentsOf: URL(fileURLWithPath: otherFile)).prefix(200)).write(
      to: URL(fileURLWithPath: otherFile))
    let again = try await FilesystemStore.open(
      root: root, maxBytes: nil, options: Options(content: .actionCache))
    #expect(again.count == 0)
    #expect(quarantined(root).contains("\(other.hashHex)-150.sealed"))
  }

  @Test("auto keeps CAS blobs plain and seals the rest; cas refuses the rest")
  func contentModes() async throws {
    let root = temporaryDirectory()
    let store = try await FilesystemStore.open(root: root, maxBytes: nil)
    let blob = noise(1000)
    try await store.writeAll(digestOf(blob), blob)
    #expect(FileManager.default.fileExists(atPath: contentFile(root, digestOf(blob))))
    let key = digestOf(noise(100))
    try await store.writeAll(key, blob)
    #expect(FileManager.default.fileExists(atPath: contentFile(root, key, sealed: true)))
    // Rewritten with a value of the key's size: plain now, the sealed file is gone.
    let sameSize = noise(100)
    try await store.writeAll(key, sameSize)
    #expect(try await readRange(store, key) == sameSize)
    #expect(!FileManager.default.fileExists(atPath: contentFile(root, key, sealed: true)))
    let reopened = try await FilesystemStore.open(root: root, maxBytes: nil)
    #expect(reopened.count == 2)

    let cas = try await FilesystemStore.open(
      root: temporaryDirectory(), maxBytes: nil, name: "strict", options: Options(content: .cas))
    let refused = await storeError { try await cas.writeAll(key, blob) }
    #expect(refused?.code == .invalidArgument)
    #expect(try await cas.findMissing([key]) == [key])
  }

  // MARK: - Verification

  @Test("verify_reads catches a bit flip and never delivers the whole blob")
  func verifyReads() async throws {
    let root = temporaryDirectory()
    let store = try await FilesystemStore.open(
      root: root, maxBytes: nil, options: Options(verifyReads: true))
    let data = noise(1_000_000)
    let d = digestOf(data)
    try await store.writeAll(d, data)
    #expect(try await readRange(store, d, offset: 10, limit: 20) == Array(data[10..<30]))
    var flipped = data
    flipped[999_000] ^= 0x01
    try Data(flipped).write(to: URL(fileURLWithPath: contentFile(root, d)))
    var received = 0
    let error = await storeError {
      _ = try await store.read(d, offset: 0, limit: nil) { received += $0.count }
    }
    #expect(error?.code == .dataLoss)
    #expect(received < data.count)
    #expect(try await store.findMissing([d]) == [d])
    #expect(quarantined(root) == ["\(d.hashHex)-1000000"])

    // Without verify_reads the same flip goes unnoticed: the option is what catches it.
    let plain = try await FilesystemStore.open(root: temporaryDirectory(), maxBytes: nil)
    try await plain.writeAll(d, data)
    try Data(flipped).write(to: URL(fileURLWithPath: plain.path(d)))
    #expect(try await readRange(plain, d) == flipped)
  }

  @Test("verify_on_start quarantines bit flips found at start, in the background")
  func verifyOnStart() async throws {
    let root = temporaryDirectory()
    let blobs = (0..<5).map { _ in noise(50_000) }
    do {
      let store = try await FilesystemStore.open(root: root, maxBytes: nil)
      for b in blobs { try await store.writeAll(digestOf(b), b) }
    }
    var flipped = blobs[2]
    flipped[0] ^= 0x80
    try Data(flipped).write(to: URL(fileURLWithPath: contentFile(root, digestOf(blobs[2]))))
    let store = try await FilesystemStore.open(
      root: root, maxBytes: nil, options: Options(verifyOnStart: true))
    #expect(store.count == 5)  // the scan only checks sizes; the hash check comes after
    let report = await store.verifyContents()
    #expect(report == .init(checked: 5, quarantined: 1))
    #expect(try await store.findMissing(blobs.map(digestOf)) == [digestOf(blobs[2])])
    #expect(quarantined(root) == ["\(digestOf(blobs[2]).hashHex)-50000"])
    #expect(await store.verifyContents() == .init())  // once only
  }

  @Test("StoreFactory names the store after its config entry")
  func factoryName() async throws {
    let root = temporaryDirectory()
    let factory = StoreFactory(
      specs: ["my-cas": .filesystem(.init(path: root, content: .cas, verifyOnStart: true))],
      home: "/")
    let named = try #require(try await factory.makeAll()["my-cas"] as? InstrumentedStore)
    let store = try #require(named.inner as? FilesystemStore)
    #expect(store.name == "my-cas")
    #expect(store.options.content == .cas)
    #expect(factory.maintenance.count == 1)
  }
}
