import ApusRPC

/// How stores size the zstd window of what they keep compressed.
enum StoredZstd {
  /// The window for a blob whose key says `size` bytes at `level`: the smallest power of two
  /// holding it (at least 1 KiB), at most the level's own for large inputs (512 KiB at 1,
  /// 1 MiB at 2, 2 MiB from 3; higher levels' 4–8 MiB are capped at 2 MiB). Stored frames do
  /// not carry their size (an action-cache value's length is not its key's), and a decoder
  /// allocates the window the frame declares, so without this every read of a small blob
  /// would take 0.5–8 MiB.
  static func windowLog(forSize size: Int64, level: Int) -> Int32 {
    let cap: Int32 = level <= 1 ? 19 : level == 2 ? 20 : 21
    var log: Int32 = 10
    while log < cap && (Int64(1) << Int64(log)) < size { log += 1 }
    return log
  }
}

/// The chunks of `base` as one zstd frame, compressed as they are pulled (an `s3` store's
/// upload with `compression: zstd`). Holds zstd's context and one output chunk.
struct ZstdCompressingChunks<Base: AsyncSequence<[UInt8], any Error>>: AsyncSequence {
  typealias Element = [UInt8]
  let base: Base
  let level: Int32
  let windowLog: Int32

  struct AsyncIterator: AsyncIteratorProtocol {
    var base: Base.AsyncIterator
    let level: Int32
    let windowLog: Int32
    var compressor: ZstdCompressor?
    var ended = false
    /// Uncompressed bytes taken from `base`.
    var contentBytes: Int64 = 0

    static var chunkBytes: Int { 1 << 20 }

    mutating func next() async throws -> [UInt8]? {
      if compressor == nil { compressor = try ZstdCompressor(level: level, windowLog: windowLog) }
      guard let compressor else { return nil }
      while true {
        if let out = try compressor.next(maxBytes: Self.chunkBytes) { return out }
        if ended { return nil }
        if let chunk = try await base.next() {
          contentBytes += Int64(chunk.count)
          compressor.push(chunk)
        } else {
          ended = true
          compressor.finish()
        }
      }
    }
  }

  func makeAsyncIterator() -> AsyncIterator {
    AsyncIterator(base: base.makeAsyncIterator(), level: level, windowLog: windowLog)
  }
}

/// Decodes a zstd stream pushed chunk by chunk and hands out only the bytes of the content
/// range `[start, end)`: a ranged read of a blob stored compressed, which must decode from
/// the frame's start.
struct ZstdRangeDecoder {
  private let decompressor: ZstdDecompressor
  let start: Int64
  let end: Int64
  /// Content bytes decoded so far.
  private(set) var position: Int64 = 0

  /// `contentLimit`: the most the stream may decode to (more is an error, never a bomb).
  init(contentLimit: Int64, start: Int64, end: Int64) throws(RPCError) {
    decompressor = try ZstdDecompressor(outputLimit: Int(contentLimit))
    self.start = start
    self.end = end
  }

  /// Whether the whole range has been handed out.
  var isDone: Bool { position >= end }

  /// The parts of the range that `chunk` decodes to.
  mutating func push(_ chunk: ArraySlice<UInt8>) throws(RPCError) -> [ArraySlice<UInt8>] {
    decompressor.push(chunk)
    var parts: [ArraySlice<UInt8>] = []
    while !isDone, let out = try decompressor.next(maxBytes: 1 << 20) {
      let low = max(start, position), high = min(end, position + Int64(out.count))
      if low < high { parts.append(out[Int(low - position)..<Int(high - position)]) }
      position += Int64(out.count)
    }
    return parts
  }

  /// At the end of the stream: throws unless it ended at a frame's end.
  func finish() throws(RPCError) { try decompressor.finish() }
}
