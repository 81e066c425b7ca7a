internal import CZstd

/// Streaming zstd decompression (ZSTD_DStream) with a cap on the total output: compressed
/// chunks in, uncompressed chunks of at most a caller-chosen size out.
///
/// Pull-style like ``ZstdCompressor``: ``push(_:)`` a chunk, take ``next(maxBytes:)`` until it
/// returns nil, repeat; at the end ``finish()`` says whether the input stopped inside a frame.
/// Consecutive frames decode as one stream, as zstd's own tools do. Decoding stops as soon as
/// the output passes `outputLimit` (a decompression bomb costs at most one more byte of work
/// than the limit). Bad data is INVALID_ARGUMENT naming zstd's error. Not thread-safe.
public final class ZstdDecompressor {
  private let context: OpaquePointer
  private var input: ArraySlice<UInt8> = []
  private var inputPosition = 0
  private let outputLimit: Int
  /// Uncompressed bytes returned so far.
  public private(set) var totalOutput = 0
  /// The last frame seen is completely decoded and returned (false before any input).
  public private(set) var isAtFrameEnd = false
  private var receivedInput = false

  /// zstd's own default limit on a frame's window (128 MiB), which its tools also apply.
  public static let defaultMaxWindowLog: Int32 = 27

  /// - Parameters:
  ///   - outputLimit: the most uncompressed bytes this stream may produce in total; more is
  ///     INVALID_ARGUMENT.
  ///   - maxWindowLog: frames asking for a larger window (the decoder's buffer, allocated from
  ///     the frame header) are refused, so a tiny stream cannot make the server allocate
  ///     128 MiB.
  public init(outputLimit: Int, maxWindowLog: Int32 = ZstdDecompressor.defaultMaxWindowLog)
    throws(RPCError)
  {
    guard let context = ZSTD_createDCtx() else {
      throw RPCError(.resourceExhausted, "zstd: cannot allocate a decompression context")
    }
    self.context = context
    self.outputLimit = outputLimit
    try Zstd.check(ZSTD_DCtx_setParameter(context, ZSTD_d_windowLogMax, maxWindowLog), .internal)
  }

  deinit { ZSTD_freeDCtx(context) }

  /// A window limit for a stream that should decode to `size` bytes: enough for the frames
  /// common compressors write without knowing the size (level ≤ 19 uses at most 2^23), at
  /// most zstd's default, so small blobs cannot claim a large decoder buffer.
  public static func maxWindowLog(forSize size: Int) -> Int32 {
    var log: Int32 = 23
    while log < defaultMaxWindowLog && (1 << Int(log)) < size { log += 1 }
    return log
  }

  /// Gives the next compressed chunk. The previous one must be drained.
  public func push(_ chunk: ArraySlice<UInt8>) {
    precondition(inputPosition == input.count, "ZstdDecompressor: push before drain")
    input = chunk
    inputPosition = 0
    receivedInput = receivedInput || !chunk.isEmpty
  }

  public func push(_ chunk: [UInt8]) { push(chunk[...]) }

  /// The next uncompressed chunk, at most `maxBytes` long, or nil once the pushed input is
  /// used up and everything decodable from it is returned.
  public func next(maxBytes: Int) throws(RPCError) -> [UInt8]? {
    precondition(maxBytes > 0)
    while true {
      // One byte past the limit is enough to know the limit is passed.
      let allowed = outputLimit - totalOutput
      let capacity = allowed < maxBytes ? allowed + 1 : maxBytes
      let positionBefore = inputPosition
      var hint = 0
      let output = [UInt8](unsafeUninitializedCapacity: capacity) { buffer, count in
        var out = ZSTD_outBuffer(dst: buffer.baseAddress, size: buffer.count, pos: 0)
        input.withUnsafeBytes { raw in
          var source = ZSTD_inBuffer(src: raw.baseAddress, size: raw.count, pos: inputPosition)
          hint = ZSTD_decompressStream(context, &out, &source)
          inputPosition = source.pos
        }
        count = out.pos
      }
      try Zstd.check(hint, .invalidArgument, "invalid zstd data")
      totalOutput += output.count
      guard totalOutput <= outputLimit else {
        throw RPCError(
          .invalidArgument, "zstd data decompresses to more than \(outputLimit) bytes")
      }
      // 0 is zstd's "frame complete and flushed"; a call that did nothing says nothing new.
      if hint == 0 {
        isAtFrameEnd = true
      } else if !output.isEmpty || inputPosition != positionBefore {
        isAtFrameEnd = false
      }
      if !output.isEmpty { return output }
      // No output: zstd took input into its buffers (go on while there is more) or has
      // nothing left to give.
      if inputPosition == input.count || inputPosition == positionBefore { return nil }
    }
  }

  /// Call after the last chunk is pushed and drained: throws INVALID_ARGUMENT if the stream
  /// ended inside a frame (truncated) or held no frame at all.
  public func finish() throws(RPCError) {
    guard isAtFrameEnd else {
      throw RPCError(
        .invalidArgument,
        receivedInput
          ? "truncated zstd data: the stream ends inside a frame" : "empty zstd stream (no frame)")
    }
  }
}
