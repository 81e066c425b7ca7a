import ApusRPC

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
