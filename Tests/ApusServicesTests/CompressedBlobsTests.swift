import ApusProto
import ApusRPC
import ApusStore
import Testing

@testable import ApusServices

/// zstd in the CAS batch calls, Capabilities, and the resource-name checks of ByteStream.
@Suite("compressed blobs", .timeLimit(.minutes(3)))
struct CompressedBlobsTests {
  let table = InstanceTable(
    instances: ["": Instance(cas: VerifyStore(backend: MemoryStore()), actionCache: MemoryStore(), actionCacheUpdates: true)],
    maxMessageBytes: 1 << 20)

  static let text = Array(String(repeating: "compressible text, ", count: 1000).utf8)

  func update(_ data: [UInt8], digestOf original: [UInt8], _ compressor: Compressor = .zstd)
    async throws -> RPCStatusMessage?
  {
    var item = BatchUpdateBlobsRequest.Request()
    item.digest = SHA256Hasher.digest(of: original).proto
    item.data = data
    item.compressor = compressor
    var r = BatchUpdateBlobsRequest()
    r.requests = [item]
    return try await ContentAddressableStorageService.batchUpdate(table, r).responses.first?.status
  }

  func present(_ data: [UInt8]) async throws -> Bool {
    var find = FindMissingBlobsRequest()
    find.blobDigests = [SHA256Hasher.digest(of: data).proto]
    return try await ContentAddressableStorageService.findMissing(table, find.decoded()).isEmpty
  }

  @Test("a zstd batch upload is stored uncompressed and read back either way")
  func batchRoundTrip() async throws {
    let compressed = try ZstdCompressor.compress(Self.text)
    #expect(try await update(compressed, digestOf: Self.text)?.code == 0)
    #expect(try await present(Self.text))

    var read = BatchReadBlobsRequest()
    read.digests = [SHA256Hasher.digest(of: Self.text).proto, SHA256Hasher.digest(of: [1, 2, 3]).proto]
    let plain = try await ContentAddressableStorageService.batchRead(table, read)
    #expect(plain.responses[0].data == Self.text)
    #expect(plain.responses[0].compressor == .identity)

    read.acceptableCompressors = [.zstd]
    let zipped = try await ContentAddressableStorageService.batchRead(table, read)
    #expect(zipped.responses[0].compressor == .zstd)
    #expect(zipped.responses[0].data.count < Self.text.count / 10)
    #expect(try ZstdUploadDecoder.decodeAll(zipped.responses[0].data, expectedSize: Int64(Self.text.count)) == Self.text)
    #expect(zipped.responses[1].status?.code == RPCStatusCode.notFound.rawValue)
  }

  @Test("small or incompressible blobs are answered uncompressed")
  func notWorthIt() async throws {
    let small = Array("tiny".utf8)
    var random = SystemRandomNumberGenerator()
    let noise = (0..<4096).map { _ in UInt8.random(in: 0...255, using: &random) }
    #expect(try await update(small, digestOf: small, .identity)?.code == 0)
    #expect(try await update(noise, digestOf: noise, .identity)?.code == 0)
    var read = BatchReadBlobsRequest()
    read.digests = [SHA256Hasher.digest(of: small).proto, SHA256Hasher.digest(of: noise).proto]
    read.acceptableCompressors = [.zstd]
    let response = try await ContentAddressableStorageService.batchRead(table, read)
    #expect(response.responses.map(\.compressor) == [.identity, .identity])
    #expect(response.responses.map(\.data) == [small, noise])
  }

  @Test("bad compressed batch blobs fail alone with INVALID_ARGUMENT and store nothing")
  func badBlobs() async throws {
    let compressed = try ZstdCompressor.compress(Self.text)
    let other = Array(Self.text.dropLast())
    // Wrong digest (one byte short), corrupt data, truncated frame, unknown compressor.
    let wrong = try await update(compressed, digestOf: other)
    #expect(wrong?.code == RPCStatusCode.invalidArgument.rawValue)
    #expect(wrong?.message.contains("more than the digest's") == true)
    let corrupt = try await update(Array("not zstd".utf8) + compressed, digestOf: Self.text)
    #expect(corrupt?.message.hasPrefix("invalid zstd data") == true)
    let truncated = try await update(Array(compressed.dropLast(3)), digestOf: Self.text)
    #expect(truncated?.message.contains("truncated") == true)
    let deflate = try await update(compressed, digestOf: Self.text, .deflate)
    #expect(deflate?.message.contains("compressor 2 is not supported") == true)
    #expect(try await !present(Self.text))
  }

  @Test("compressed batch blobs count their digests' sizes against the batch limit")
  func inflatedLimit() async throws {
    // 2 MiB of zeros compress to a few hundred bytes but would inflate past the 1 MiB limit.
    let zeros = [UInt8](repeating: 0, count: 2 << 20)
    let error = await #expect(throws: RPCError.self) {
      _ = try await update(try ZstdCompressor.compress(zeros), digestOf: zeros)
    }
    #expect(error?.code == .invalidArgument)
    #expect(error?.message.hasPrefix("batch decompresses to 2097152 bytes") == true)
  }

  @Test("Capabilities advertise zstd and only SHA256")
  func capabilities() throws {
    let caps = try CapabilitiesService.capabilities(table, "")
    #expect(caps.cacheCapabilities?.supportedCompressors == [.zstd])
    #expect(caps.cacheCapabilities?.supportedBatchUpdateCompressors == [.zstd])
    #expect(caps.cacheCapabilities?.digestFunctions == [.sha256])
  }

  @Test("digest_function other than SHA256 is named in the error")
  func digestFunction() async {
    var find = FindMissingBlobsRequest()
    find.digestFunction = .blake3
    await #expect(throws: RPCError(.invalidArgument, "digest_function BLAKE3 (9) is not supported; only SHA256 is")) {
      _ = try await ContentAddressableStorageService.findMissing(table, find.decoded())
    }
    find.digestFunction = .sha256
    _ = try? await ContentAddressableStorageService.findMissing(table, find.decoded())
  }

  @Test("ByteStream names: zstd and sha256 pass; other compressors and digest functions are refused")
  func resourceNames() throws {
    let h = String(repeating: "a", count: 64)
    #expect(try ByteStreamService.resource("compressed-blobs/zstd/\(h)/3", .read).compressor == "zstd")
    #expect(try ByteStreamService.resource("blobs/sha256/\(h)/3", .read).digestFunction == "sha256")
    #expect(throws: RPCError(.invalidArgument, "compressed-blobs/deflate is not supported; this server supports zstd")) {
      try ByteStreamService.resource("compressed-blobs/deflate/\(h)/3", .read)
    }
    #expect(throws: RPCError(.invalidArgument, "digest function \"blake3\" in the resource name is not supported; only sha256 is")) {
      try ByteStreamService.resource("uploads/u/blobs/blake3/\(h)/3", .write)
    }
  }
}
