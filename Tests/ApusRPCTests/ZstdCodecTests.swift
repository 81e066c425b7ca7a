import Testing

@testable import ApusRPC

/// The zstd wrappers: round trips, multi-frame streams, bad input, and the output cap.
@Suite("zstd codec", .timeLimit(.minutes(1)))
struct ZstdCodecTests {
  /// Compressible but not trivial: a repeating text with a counter.
  static func sample(_ count: Int) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(count)
    var i = 0
    while out.count < count {
      out += Array("line \(i) of the apus zstd test\n".utf8)
      i += 1
    }
    return Array(out.prefix(count))
  }

  static func compressStreaming(
    _ bytes: [UInt8], chunk: Int, maxOut: Int, pledged: Bool = false
  ) throws -> [[UInt8]] {
    let c = try ZstdCompressor(level: 1, pledgedSize: pledged ? bytes.count : nil)
    var out: [[UInt8]] = []
    var start = 0
    while start < bytes.count {
      c.push(bytes[start..<min(start + chunk, bytes.count)])
      while let o = try c.next(maxBytes: maxOut) { out.append(o) }
      start += chunk
    }
    c.finish()
    while let o = try c.next(maxBytes: maxOut) { out.append(o) }
    #expect(c.isFinished)
    return out
  }

  static func decompressStreaming(
    _ bytes: [UInt8], chunk: Int, maxOut: Int, limit: Int = .max
  ) throws -> [UInt8] {
    let d = try ZstdDecompressor(outputLimit: limit)
    var out: [UInt8] = []
    var start = 0
    while start < bytes.count {
      d.push(bytes[start..<min(start + chunk, bytes.count)])
      while let o = try d.next(maxBytes: maxOut) {
        #expect(o.count <= maxOut)
        out += o
      }
      start += chunk
    }
    try d.finish()
    #expect(d.totalOutput == out.count)
    return out
  }

  @Test(
    "round trip in chunks of any size, output chunks within the bound",
    arguments: [(0, 1, 7), (1, 1, 1), (100_000, 4096, 1000), (3_000_000, 1 << 20, 65536),
      (3_000_000, 77_777, 1 << 20)])
  func roundTrip(size: Int, inChunk: Int, maxOut: Int) throws {
    let data = Self.sample(size)
    for pledged in [false, true] {
      let frames = try Self.compressStreaming(data, chunk: inChunk, maxOut: maxOut, pledged: pledged)
      #expect(frames.allSatisfy { $0.count <= maxOut && !$0.isEmpty })
      let compressed = frames.flatMap { $0 }
      if size > 10_000 { #expect(compressed.count < size / 4) }
      #expect(try Self.decompressStreaming(compressed, chunk: 1000, maxOut: maxOut) == data)
    }
  }

  @Test("a frame made by another zstd (python-zstandard, level 3) decodes")
  func foreignFrame() throws {
    let frame: [UInt8] = [
      40, 181, 47, 253, 32, 52, 157, 0, 0, 104, 104, 101, 108, 108, 111, 44, 32, 97, 112, 117,
      115, 33, 32, 1, 0, 160, 156, 95,
    ]
    let out = try Self.decompressStreaming(frame, chunk: 3, maxOut: 5)
    #expect(out == Array(String(repeating: "hello, apus! ", count: 4).utf8))
  }

  @Test("consecutive frames decode as one stream; frame ends are seen")
  func multiFrame() throws {
    let a = Self.sample(50_000)
    let b = Array(Self.sample(70_000).reversed())
    let stream = try ZstdCompressor.compress(a) + ZstdCompressor.compress(b)
    #expect(try Self.decompressStreaming(stream, chunk: 999, maxOut: 8192) == a + b)

    let first = try ZstdCompressor.compress(a)
    let d = try ZstdDecompressor(outputLimit: .max)
    #expect(!d.isAtFrameEnd)
    d.push(first)
    while try d.next(maxBytes: 1 << 20) != nil {}
    #expect(d.isAtFrameEnd)
    d.push(Array(try ZstdCompressor.compress(b).prefix(10)))
    while try d.next(maxBytes: 1 << 20) != nil {}
    #expect(!d.isAtFrameEnd)
  }

  @Test("a truncated stream fails at finish", arguments: [1, 5, 20, 1000])
  func truncated(cut: Int) throws {
    let whole = try ZstdCompressor.compress(Self.sample(200_000))
    let d = try ZstdDecompressor(outputLimit: .max)
    d.push(whole.dropLast(cut))
    while try d.next(maxBytes: 65536) != nil {}
    let error = #expect(throws: RPCError.self) { try d.finish() }
    #expect(error?.code == .invalidArgument)
    #expect(error?.message.contains("truncated") == true)
  }

  @Test("an empty stream has no frame")
  func empty() throws {
    let d = try ZstdDecompressor(outputLimit: 10)
    d.push([])
    #expect(try d.next(maxBytes: 10) == nil)
    let error = #expect(throws: RPCError.self) { try d.finish() }
    #expect(error?.message.contains("empty zstd stream") == true)
  }

  @Test("corrupt input is INVALID_ARGUMENT with zstd's error name")
  func corrupt() throws {
    let notZstd = Array("this is not a zstd frame at all".utf8)
    let error = #expect(throws: RPCError.self) {
      _ = try Self.decompressStreaming(notZstd, chunk: 100, maxOut: 100)
    }
    #expect(error?.code == .invalidArgument)
    #expect(error?.message == "invalid zstd data: Unknown frame descriptor")

    // A damaged block inside a valid frame.
    var frame = try ZstdCompressor.compress(Self.sample(100_000))
    for i in stride(from: 20, to: frame.count - 10, by: 7) { frame[i] ^= 0x5A }
    let damaged = #expect(throws: RPCError.self) {
      _ = try Self.decompressStreaming(frame, chunk: 4096, maxOut: 65536)
    }
    #expect(damaged?.code == .invalidArgument)
    #expect(damaged?.message.hasPrefix("invalid zstd data: ") == true)
  }

  @Test("the output cap stops a bomb after at most one byte past the limit")
  func outputCap() throws {
    // 64 MiB of zeros compress to a few KiB.
    let c = try ZstdCompressor(level: 1)
    let zeros = [UInt8](repeating: 0, count: 1 << 20)
    var bomb: [UInt8] = []
    for _ in 0..<64 {
      c.push(zeros)
      while let o = try c.next(maxBytes: 1 << 16) { bomb += o }
    }
    c.finish()
    while let o = try c.next(maxBytes: 1 << 16) { bomb += o }
    #expect(bomb.count < 64 * 1024)

    let limit = 1 << 20
    let d = try ZstdDecompressor(outputLimit: limit)
    d.push(bomb)
    var decoded = 0
    let error = #expect(throws: RPCError.self) {
      while let o = try d.next(maxBytes: 256 * 1024) { decoded += o.count }
    }
    #expect(error?.code == .invalidArgument)
    #expect(error?.message == "zstd data decompresses to more than 1048576 bytes")
    #expect(decoded == limit)
    #expect(d.totalOutput == limit + 1)

    // Exactly at the limit is fine.
    #expect(try Self.decompressStreaming(bomb, chunk: 1 << 16, maxOut: 1 << 20, limit: 64 << 20).count == 64 << 20)
  }

  @Test("frames needing a larger window than allowed are refused")
  func windowLimit() throws {
    #expect(ZstdDecompressor.maxWindowLog(forSize: 0) == 23)
    #expect(ZstdDecompressor.maxWindowLog(forSize: 1 << 23) == 23)
    #expect(ZstdDecompressor.maxWindowLog(forSize: (1 << 23) + 1) == 24)
    #expect(ZstdDecompressor.maxWindowLog(forSize: 1 << 40) == 27)
    // Level 19 without a known size uses an 8 MiB window: accepted at 23, refused at 20.
    // (Draining before finish() keeps zstd from learning the size on its first call.)
    let c = try ZstdCompressor(level: 19)
    c.push(Self.sample(300_000))
    var frame: [UInt8] = []
    while let o = try c.next(maxBytes: 1 << 20) { frame += o }
    c.finish()
    while let o = try c.next(maxBytes: 1 << 20) { frame += o }
    let ok = try ZstdDecompressor(outputLimit: .max, maxWindowLog: 23)
    ok.push(frame)
    while try ok.next(maxBytes: 1 << 20) != nil {}
    try ok.finish()
    let small = try ZstdDecompressor(outputLimit: .max, maxWindowLog: 20)
    small.push(frame)
    let error = #expect(throws: RPCError.self) { while try small.next(maxBytes: 1 << 20) != nil {} }
    #expect(error?.message.hasPrefix("invalid zstd data: Frame requires too much memory") == true)
  }
}
