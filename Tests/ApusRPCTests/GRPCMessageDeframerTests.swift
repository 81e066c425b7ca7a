import Testing

@testable import ApusRPC

@Suite("gRPC message framing", .timeLimit(.minutes(3)))
struct GRPCMessageDeframerTests {
  func frame(_ payload: [UInt8], compressed: Bool = false) -> [UInt8] {
    grpcMessagePrefix(length: payload.count, compressed: compressed) + payload
  }

  func feed(_ d: inout GRPCMessageDeframer, _ bytes: [UInt8]) throws -> [GRPCMessageDeframer.Message] {
    try bytes.withUnsafeBytes { try d.append($0) }
  }

  @Test("messages split at every possible byte boundary")
  func everySplit() throws {
    let stream = frame([1, 2, 3]) + frame([]) + frame(Array(repeating: 7, count: 300), compressed: true)
    for cut in 0...stream.count {
      var d = GRPCMessageDeframer(maxMessageBytes: 1024)
      let messages = try feed(&d, Array(stream[..<cut])) + feed(&d, Array(stream[cut...]))
      #expect(messages.map(\.payload) == [[1, 2, 3], [], Array(repeating: 7, count: 300)])
      #expect(messages.map(\.compressed) == [false, false, true])
      #expect(d.isAtMessageBoundary)
    }
  }

  @Test("byte-at-a-time delivery")
  func byteAtATime() throws {
    var d = GRPCMessageDeframer(maxMessageBytes: 1024)
    var out: [GRPCMessageDeframer.Message] = []
    for b in frame([9, 8]) + frame([7]) { out += try feed(&d, [b]) }
    #expect(out.map(\.payload) == [[9, 8], [7]])
  }

  @Test("a declared length over the limit is refused before buffering")
  func oversize() {
    var d = GRPCMessageDeframer(maxMessageBytes: 10)
    #expect(throws: RPCError(.resourceExhausted, "message of 11 bytes exceeds the limit of 10 bytes")) {
      _ = try feed(&d, grpcMessagePrefix(length: 11))
    }
  }

  @Test("an unknown flag byte is an error")
  func badFlag() {
    var d = GRPCMessageDeframer(maxMessageBytes: 10)
    #expect(throws: RPCError.self) { _ = try feed(&d, [2, 0, 0, 0, 0]) }
  }

  @Test("a 1 MiB upload chunk arriving in 16 KiB frames fills one allocation of its size")
  func exactAllocation() throws {
    // 1 MiB of data and a Write's other fields: a store keeps this array, so it must not
    // have grown (copied, and twice the size) on the way.
    let payload = [UInt8](repeating: 5, count: (1 << 20) + 200)
    let stream = frame(payload)
    var d = GRPCMessageDeframer(maxMessageBytes: 4 << 20)
    var out: [GRPCMessageDeframer.Message] = []
    for start in stride(from: 0, to: stream.count, by: 16 << 10) {
      out += try feed(&d, Array(stream[start..<min(start + (16 << 10), stream.count)]))
    }
    #expect(out.map(\.payload) == [payload])
    #expect((out.first?.payload.capacity ?? 0) < payload.count + (16 << 10))
  }

  @Test("a body that ends mid-message is detectable")
  func partial() throws {
    var d = GRPCMessageDeframer(maxMessageBytes: 10)
    _ = try feed(&d, [0, 0, 0, 0, 5, 1])
    #expect(!d.isAtMessageBoundary)
    // Every byte is either in a returned message or still buffered (fuzzer finding).
    #expect(d.bufferedBytes == 6)
    _ = try feed(&d, [2, 3, 4, 5, 0, 0])
    #expect(d.bufferedBytes == 2)
  }
}

@Suite("gRPC header codecs", .timeLimit(.minutes(3)))
struct HeaderCodecTests {
  @Test("grpc-timeout units", arguments: [
    ("1H", Duration.seconds(3600)), ("2M", .seconds(120)), ("3S", .seconds(3)),
    ("4m", .milliseconds(4)), ("5u", .microseconds(5)), ("6n", .nanoseconds(6)),
    ("99999999S", .seconds(99_999_999)),
  ])
  func timeouts(text: String, expected: Duration) {
    #expect(GRPCTimeout.parse(text) == expected)
  }

  @Test("malformed grpc-timeout", arguments: ["", "S", "1", "123456789S", "1x", "-1S", "1.5S"])
  func badTimeouts(text: String) {
    #expect(GRPCTimeout.parse(text) == nil)
  }

  @Test("grpc-message percent-encoding round-trips")
  func percent() {
    let message = "blob a/1 not found: 100% — ünïcödé\n"
    let encoded = PercentEncoding.encode(message)
    #expect(encoded.utf8.allSatisfy { $0 >= 0x20 && $0 <= 0x7E })
    #expect(encoded.contains("100%25"))
    #expect(PercentEncoding.decode(encoded) == message)
  }

  @Test("base64 for -bin metadata", arguments: [0, 1, 2, 3, 4, 5, 100])
  func base64(count: Int) throws {
    let bytes = (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 37) }
    let text = Base64.encode(bytes)
    #expect(!text.contains("="))
    #expect(Base64.decode(text) == bytes)
    let padding = String(repeating: "=", count: (4 - text.count % 4) % 4)
    #expect(Base64.decode(text + padding) == bytes)
  }

  @Test("base64 rejects junk")
  func base64Junk() {
    #expect(Base64.decode("ab!c") == nil)
    #expect(Base64.decode("a") == nil)
  }

  @Test("gzip round trip and decompression limit")
  func gzip() throws {
    let data = Array(repeating: UInt8(42), count: 200_000) + Array("tail".utf8)
    let compressed = Gzip.compress(data)
    #expect(compressed.count < 2_000)
    #expect(try Gzip.decompress(compressed, limit: 1 << 20) == data)
    #expect(throws: RPCError.self) { try Gzip.decompress(compressed, limit: 100_000) }
    #expect(throws: RPCError.self) { try Gzip.decompress([1, 2, 3, 4], limit: 100) }
  }
}
