import ApusRPC

/// The chunks of `base` as one zstd frame, compressed as they are pulled (an `s3` store's
/// upload with `compression: zstd`). Holds zstd's context and one output chunk.
struct ZstdCompressingChunks<Base: AsyncSequence<ArraySlice<UInt8>, any Error>>: AsyncSequence {
  typealias Element = ArraySlice<UInt8>
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

    mutating func next() async throws -> ArraySlice<UInt8>? {
      if compressor == nil { compressor = try ZstdCompressor(level: level, windowLog: windowLog) }
      guard let compressor else { return nil }
      while true {
        if let out = try compressor.next(maxBytes: Self.chunkBytes) { return out[...] }
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
