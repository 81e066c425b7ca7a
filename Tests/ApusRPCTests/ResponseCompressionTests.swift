import Testing

@testable import ApusRPC

/// Response message compression: which encoding a call gets, and how each message is framed.
@Suite("response compression", .timeLimit(.minutes(3)))
struct ResponseCompressionTests {
  static let compressible = Array(String(repeating: "action output line\n", count: 500).utf8)

  /// The payload of one framed message, checking the prefix's flag and length.
  func unframe(_ parts: [ArraySlice<UInt8>]) -> (compressed: Bool, payload: [UInt8]) {
    let bytes = parts.reduce(into: [UInt8]()) { $0 += $1 }
    let length = Int(bytes[1]) << 24 | Int(bytes[2]) << 16 | Int(bytes[3]) << 8 | Int(bytes[4])
    #expect(bytes.count == 5 + length)
    return (bytes[0] == 1, Array(bytes[5...]))
  }

  @Test("the server's first preference the client accepts wins")
  func negotiation() {
    let both = ResponseCompression(minBytes: 10, encodings: [.zstd, .gzip])
    #expect(both.compressor(acceptEncoding: "identity, gzip, zstd")?.encoding == .zstd)
    #expect(both.compressor(acceptEncoding: "gzip,deflate")?.encoding == .gzip)
    #expect(both.compressor(acceptEncoding: "deflate") == nil)
    #expect(both.compressor(acceptEncoding: nil) == nil)
    let gzipFirst = ResponseCompression(minBytes: 10, encodings: [.gzip, .zstd])
    #expect(gzipFirst.compressor(acceptEncoding: "zstd,gzip")?.encoding == .gzip)
    #expect(ResponseCompression(minBytes: 1, encodings: [.identity]).encodings.isEmpty)
  }

  @Test("large compressible messages are compressed and flagged", arguments: [MessageEncoding.gzip, .zstd])
  func compressed(encoding: MessageEncoding) throws {
    let compressor = ResponseCompressor(encoding: encoding, minBytes: 1024)
    // Given in parts, as ByteStream reads are (field header + payload slice).
    let parts = [Self.compressible[..<7], Self.compressible[7...]]
    let (flag, payload) = unframe(compressor.frame(parts))
    #expect(flag)
    #expect(payload.count < Self.compressible.count / 10)
    #expect(try encoding.decompress(payload, limit: 1 << 20) == Self.compressible)
  }

  @Test("small messages and ones that do not shrink go out as they are", arguments: [MessageEncoding.gzip, .zstd])
  func uncompressed(encoding: MessageEncoding) {
    let compressor = ResponseCompressor(encoding: encoding, minBytes: 1024)
    let small = Array(Self.compressible.prefix(1023))
    #expect(unframe(compressor.frame([small[...]])) == (false, small))
    var generator = SystemRandomNumberGenerator()
    let random = (0..<100_000).map { _ in UInt8.random(in: 0...255, using: &generator) }
    #expect(unframe(compressor.frame([random[...]])) == (false, random))
    #expect(encoding.compress(random[...]) == nil)
  }

  @Test("a zstd message over the limit is refused like a gzip one")
  func zstdLimit() throws {
    let frame = try ZstdCompressor.compress(Array(repeating: 0, count: 1 << 20))
    #expect(try MessageEncoding.zstd.decompress(frame, limit: 1 << 20).count == 1 << 20)
    #expect(throws: RPCError(.resourceExhausted, "decompressed message exceeds 1000 bytes")) {
      _ = try MessageEncoding.zstd.decompress(frame, limit: 1000)
    }
    #expect(throws: RPCError.self) { _ = try MessageEncoding.zstd.decompress([1, 2, 3, 4], limit: 100) }
    #expect(MessageEncoding.list("gzip , zstd,br") == [.gzip, .zstd])
  }
}
