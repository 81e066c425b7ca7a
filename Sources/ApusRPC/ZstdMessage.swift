/// zstd for whole gRPC messages (`grpc-encoding: zstd`), over the streaming codec.
enum ZstdMessage {
  /// Inflates one message; more than `limit` bytes out is RESOURCE_EXHAUSTED, as for gzip
  /// (decoding stops there, so a bomb costs at most `limit` bytes of memory).
  static func decompress(_ payload: [UInt8], limit: Int) throws(RPCError) -> [UInt8] {
    let decompressor = try ZstdDecompressor(outputLimit: limit)
    decompressor.push(payload)
    var output: [UInt8] = []
    do throws(RPCError) {
      while let chunk = try decompressor.next(maxBytes: 256 * 1024) { output += chunk }
    } catch {
      guard decompressor.totalOutput > limit else { throw error }
      throw RPCError(.resourceExhausted, "decompressed message exceeds \(limit) bytes")
    }
    try decompressor.finish()
    return output
  }

  /// `message` as one zstd frame at `level`, or nil unless that is under `smallerThan` bytes
  /// (compression stops as soon as it is not).
  static func compress(_ message: ArraySlice<UInt8>, level: Int32, smallerThan: Int) -> [UInt8]? {
    guard smallerThan > 1, let compressor = try? ZstdCompressor(level: level, pledgedSize: message.count)
    else { return nil }
    compressor.push(message)
    compressor.finish()
    var output: [UInt8] = []
    while !compressor.isFinished {
      let room = smallerThan - 1 - output.count
      guard room > 0, let chunk = try? compressor.next(maxBytes: room) else { return nil }
      output += chunk
    }
    return output
  }
}
