import Testing

@testable import ApusRPC

/// The upload checks on top of the decompressor: exact size, compressed-size bound, and the
/// messages a client sees.
@Suite("zstd upload decoder", .timeLimit(.minutes(1)))
struct ZstdUploadDecoderTests {
  static let data = ZstdCodecTests.sample(300_000)

  @Test("exactly the digest's size is accepted, in any chunking")
  func accepted() throws {
    let frame = try ZstdCompressor.compress(Self.data)
    #expect(try ZstdUploadDecoder.decodeAll(frame, expectedSize: Int64(Self.data.count)) == Self.data)
    let decoder = try ZstdUploadDecoder(expectedSize: Int64(Self.data.count))
    var out: [UInt8] = []
    for start in stride(from: 0, to: frame.count, by: 333) {
      try decoder.push(frame[start..<min(start + 333, frame.count)])
      while let chunk = try decoder.next(maxBytes: 4096) { out += chunk }
    }
    try decoder.finish()
    #expect(out == Self.data)
    #expect(decoder.compressedBytes == Int64(frame.count))
    #expect(decoder.decodedBytes == Int64(Self.data.count))
  }

  @Test("more or less output than the digest's size is INVALID_ARGUMENT")
  func wrongSize() throws {
    let frame = try ZstdCompressor.compress(Self.data)
    let over = #expect(throws: RPCError.self) {
      _ = try ZstdUploadDecoder.decodeAll(frame, expectedSize: 1000)
    }
    #expect(over == RPCError(.invalidArgument, "the compressed upload decompresses to more than the digest's 1000 bytes"))
    let under = #expect(throws: RPCError.self) {
      _ = try ZstdUploadDecoder.decodeAll(frame, expectedSize: 300_001)
    }
    #expect(under == RPCError(.invalidArgument, "the compressed upload decompresses to 300000 bytes, the digest says 300001"))
  }

  @Test("compressed input past zstd's worst case for the size is refused before decoding it")
  func compressedBound() throws {
    let decoder = try ZstdUploadDecoder(expectedSize: 10)
    #expect(decoder.maxCompressedBytes == Int64(ZstdCompressor.maxCompressedSize(10)) + 65536)
    // A skippable frame decodes to nothing, so only the bound stops an endless one.
    let skippable: [UInt8] = [0x50, 0x2A, 0x4D, 0x18, 0xFF, 0xFF, 0x0F, 0x00]
    try decoder.push(skippable)
    while try decoder.next(maxBytes: 100) != nil {}
    let error = #expect(throws: RPCError.self) {
      try decoder.push([UInt8](repeating: 0, count: 70_000))
    }
    #expect(error?.code == .invalidArgument)
    #expect(error?.message.contains("more than zstd needs for a blob of 10 bytes") == true)
    #expect(ZstdCompressor.maxCompressedSize(Int.max) == Int.max)
  }
}
