import ApusProto
import Foundation
import Testing

@testable import ApusStore

/// The behaviour every backend must share, run against each of them.
@Suite("BlobStore contract", .timeLimit(.minutes(3)))
struct BlobStoreContractTests {
  enum Kind: String, CaseIterable, Sendable { case memory, filesystem }

  func make(_ kind: Kind) async throws -> any BlobStore {
    switch kind {
    case .memory: MemoryStore()
    case .filesystem: try await FilesystemStore.open(root: temporaryDirectory(), maxBytes: nil)
    }
  }

  @Test("write, find, read with offsets", arguments: Kind.allCases)
  func roundTrip(kind: Kind) async throws {
    let store = try await make(kind)
    let data = randomBytes(700_000)
    let d = digestOf(data)
    #expect(try await store.findMissing([d]) == [d])
    #expect(try await readRange(store, d) == nil)
    try await store.write(d, from: SingleChunk(data))
    #expect(try await store.findMissing([d, digestOf([1])]) == [digestOf([1])])
    #expect(try await readRange(store, d) == data)
    #expect(try await readRange(store, d, offset: 100) == Array(data[100...]))
    #expect(try await readRange(store, d, offset: 5, limit: 10) == Array(data[5..<15]))
    #expect(try await readRange(store, d, offset: 700_000) == [])
  }

  @Test("a failed write leaves nothing visible", arguments: Kind.allCases)
  func failedWrite(kind: Kind) async throws {
    let store = try await make(kind)
    let data = randomBytes(3_000_000)
    let d = digestOf(data)
    let chunks = stride(from: 0, to: data.count, by: 500_000).map {
      Array(data[$0..<min($0 + 500_000, data.count)])
    }
    await #expect(throws: FailingChunks.Disconnected.self) {
      try await store.write(d, from: FailingChunks(chunks: chunks, failAfter: 4))
    }
    #expect(try await store.findMissing([d]) == [d])
    #expect(try await readRange(store, d) == nil)
  }

  @Test("verify rejects wrong content and wrong sizes", arguments: Kind.allCases)
  func verify(kind: Kind) async throws {
    let store = VerifyStore(backend: try await make(kind))
    let data = Array("content".utf8)
    let d = digestOf(data)
    let wrongHash = digestOf(Array("CONTENT".utf8))
    await #expect(throws: StoreError.self) { try await store.writeAll(wrongHash, data) }
    let short = BlobDigest(hashBytes: d.hashBytes, sizeBytes: 3)
    await #expect(throws: StoreError.self) { try await store.writeAll(short, data) }
    let long = BlobDigest(hashBytes: d.hashBytes, sizeBytes: 30)
    await #expect(throws: StoreError.self) { try await store.writeAll(long, data) }
    #expect(try await store.findMissing([wrongHash, short, long]).count == 3)
    try await store.writeAll(d, data)
    #expect(try await readRange(store, d) == data)
  }

  @Test("concurrent writers of one blob agree", arguments: Kind.allCases)
  func concurrentWriters(kind: Kind) async throws {
    let store = VerifyStore(backend: try await make(kind))
    let data = randomBytes(1_000_000)
    let d = digestOf(data)
    try await withThrowingTaskGroup(of: Void.self) { group in
      for _ in 0..<16 { group.addTask { try await store.writeAll(d, data) } }
      try await group.waitForAll()
    }
    #expect(try await readRange(store, d) == data)
  }
}

@Suite("Memory store limits", .timeLimit(.minutes(3)))
struct MemoryStoreTests {
  @Test("evicts least recently used by bytes and count")
  func eviction() async throws {
    let store = MemoryStore(limits: .init(maxBytes: 3000, maxCount: 10))
    let blobs = (0..<4).map { i in [UInt8](repeating: UInt8(i), count: 1000) }
    let ds = blobs.map(digestOf)
    for (d, b) in zip(ds, blobs.prefix(3)) { try await store.writeAll(d, b) }
    _ = try await store.findMissing([ds[0]])  // touch 0: 1 is now least recent
    try await store.writeAll(ds[3], blobs[3])
    #expect(try await store.findMissing(ds) == [ds[1]])
    #expect(store.totalBytes == 3000)

    let counted = MemoryStore(limits: .init(maxCount: 2))
    for (d, b) in zip(ds, blobs) { try await counted.writeAll(d, b) }
    #expect(try await counted.findMissing(ds) == [ds[0], ds[1]])
  }
}

@Suite("Filesystem store", .timeLimit(.minutes(3)))
struct FilesystemStoreTests {
  @Test("content survives a restart; temp files are cleared")
  func restart() async throws {
    let root = temporaryDirectory()
    let data = randomBytes(100_000)
    let d = digestOf(data)
    do {
      let store = try await FilesystemStore.open(root: root, maxBytes: nil)
      try await store.writeAll(d, data)
    }
    FileManager.default.createFile(atPath: "\(root)/tmp/leftover", contents: Data([1, 2]))
    let reopened = try await FilesystemStore.open(root: root, maxBytes: nil)
    #expect(reopened.count == 1)
    #expect(reopened.totalBytes == 100_000)
    #expect(try await readRange(reopened, d) == data)
    #expect(try FileManager.default.contentsOfDirectory(atPath: "\(root)/tmp").isEmpty)
  }

  @Test("the start-up scan indexes well-formed names only")
  func scanNames() async throws {
    let root = temporaryDirectory()
    let data = randomBytes(1_000)
    let d = digestOf(data)
    do {
      let store = try await FilesystemStore.open(root: root, maxBytes: nil)
      try await store.writeAll(d, data)
    }
    let dir = "\(root)/content/\(d.hashHex.prefix(2))"
    let hex = d.hashHex
    for junk in [
      "\(hex)-", "\(hex)-12x", "\(hex.uppercased())-1000", "\(hex.dropLast())-1000", "\(hex)_1000",
      "\(hex)-99999999999999999999", "notes.txt",
    ] {
      FileManager.default.createFile(atPath: "\(dir)/\(junk)", contents: Data([1]))
    }
    let reopened = try await FilesystemStore.open(root: root, maxBytes: nil)
    #expect(reopened.count == 1)
    #expect(reopened.totalBytes == 1_000)
    #expect(try await reopened.findMissing([d]).isEmpty)
  }

  @Test("eviction by max_bytes unlinks the oldest files, also at start")
  func eviction() async throws {
    let root = temporaryDirectory()
    let store = try await FilesystemStore.open(root: root, maxBytes: 2500)
    let blobs = (0..<3).map { i in [UInt8](repeating: UInt8(i), count: 1000) }
    let ds = blobs.map(digestOf)
    for (d, b) in zip(ds, blobs) { try await store.writeAll(d, b) }
    #expect(try await store.findMissing(ds) == [ds[0]])
    #expect(!FileManager.default.fileExists(atPath: store.path(ds[0])))
    #expect(FileManager.default.fileExists(atPath: store.path(ds[2])))
    let smaller = try await FilesystemStore.open(root: root, maxBytes: 1000)
    #expect(smaller.count == 1)
  }

  @Test("StoreFactory builds trees from specs")
  func factory() async throws {
    let store = try await StoreFactory(specs: [:], home: "/nonexistent").make(
      .verify(backend: .filesystem(.init(path: temporaryDirectory() + "/nested/deeper")), verifyHash: true))
    let data = Array("x".utf8)
    try await store.writeAll(digestOf(data), data)
    #expect(try await store.contains(digestOf(data)))
    #expect(StoreFactory.expandTilde("~/a", home: "/h") == "/h/a")
  }
}
