internal import CZstd

/// Streaming zstd compression of one frame (ZSTD_CStream): chunks in, chunks of at most a
/// caller-chosen size out.
///
/// Pull-style so an async caller can await each write: ``push(_:)`` a chunk, take
/// ``next(maxBytes:)`` until it returns nil, repeat; then ``finish()`` and drain again to get
/// the frame's end. Memory is zstd's context (a few MiB at low levels) plus one output chunk.
/// Not thread-safe: one task owns it.
public final class ZstdCompressor {
  private let context: OpaquePointer
  private var input: ArraySlice<UInt8> = []
  private var inputPosition = 0
  private var ending = false
  /// The frame is complete and fully returned.
  public private(set) var isFinished = false

  /// - Parameters:
  ///   - level: zstd's compression level (1 is fastest; negative levels are faster still).
  ///   - pledgedSize: the uncompressed size when known: written into the frame header (so
  ///     decoders can size their buffers) and used to shrink the window for small inputs.
  ///     Compression fails if the input turns out to be a different size.
  ///   - windowLog: overrides the level's window (2^windowLog bytes, 10…): the buffer every
  ///     decoder of the frame allocates. For an input expected, not known, to be small.
  public init(level: Int32 = 1, pledgedSize: Int? = nil, windowLog: Int32? = nil) throws(RPCError) {
    guard let context = ZSTD_createCCtx() else {
      throw RPCError(.resourceExhausted, "zstd: cannot allocate a compression context")
    }
    self.context = context
    try Zstd.check(ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, level), .internal)
    if let pledgedSize {
      try Zstd.check(ZSTD_CCtx_setPledgedSrcSize(context, UInt64(pledgedSize)), .internal)
    }
    if let windowLog {
      try Zstd.check(ZSTD_CCtx_setParameter(context, ZSTD_c_windowLog, windowLog), .internal)
    }
  }

  deinit { ZSTD_freeCCtx(context) }

  /// Gives the next uncompressed chunk. The previous one must be drained (``next(maxBytes:)``
  /// returned nil), and ``finish()`` not called yet.
  public func push(_ chunk: ArraySlice<UInt8>) {
    precondition(inputPosition == input.count && !ending, "ZstdCompressor: push before drain")
    input = chunk
    inputPosition = 0
  }

  public func push(_ chunk: [UInt8]) { push(chunk[...]) }

  /// Marks the end of the input: the following ``next(maxBytes:)`` calls return the rest of
  /// the frame.
  public func finish() { ending = true }

  /// The next compressed chunk, at most `maxBytes` long; nil once the pushed input is taken
  /// in (zstd may keep some of it buffered until more arrives) or, after ``finish()``, once
  /// the frame is complete.
  public func next(maxBytes: Int) throws(RPCError) -> [UInt8]? {
    precondition(maxBytes > 0)
    while !isFinished {
      let consumedAll = inputPosition == input.count
      if consumedAll && !ending { return nil }
      var remaining = 0
      let output = [UInt8](unsafeUninitializedCapacity: maxBytes) { buffer, count in
        var out = ZSTD_outBuffer(dst: buffer.baseAddress, size: buffer.count, pos: 0)
        input.withUnsafeBytes { raw in
          var source = ZSTD_inBuffer(src: raw.baseAddress, size: raw.count, pos: inputPosition)
          remaining = ZSTD_compressStream2(
            context, &out, &source, ending ? ZSTD_e_end : ZSTD_e_continue)
          inputPosition = source.pos
        }
        count = out.pos
      }
      try Zstd.check(remaining, .internal)
      if ending && remaining == 0 { isFinished = true }
      if !output.isEmpty { return output }
      // Nothing out: either the input was all absorbed into zstd's buffers, or (ending) the
      // frame is complete. Otherwise zstd made progress on the input; go on.
      if inputPosition == input.count && !ending { return nil }
    }
    return nil
  }

  /// The largest single frame zstd produces for `size` input bytes (ZSTD_compressBound);
  /// `Int.max` for sizes beyond what one frame can hold.
  public static func maxCompressedSize(_ size: Int) -> Int {
    let bound = ZSTD_compressBound(size)
    return ZSTD_isError(bound) != 0 || bound < size ? Int.max : bound
  }

  /// Compresses `bytes` into one frame in memory: for values already in memory (batch
  /// responses), not for streams.
  public static func compress(_ bytes: [UInt8], level: Int32 = 1) throws(RPCError) -> [UInt8] {
    let compressor = try ZstdCompressor(level: level, pledgedSize: bytes.count)
    let bound = ZSTD_compressBound(bytes.count)
    compressor.push(bytes)
    compressor.finish()
    var out: [UInt8] = []
    out.reserveCapacity(bound)
    while let chunk = try compressor.next(maxBytes: max(bound, 64)) { out += chunk }
    return out
  }
}

/// What the compressor and decompressor share.
enum Zstd {
  /// Throws `code` with zstd's error name when `result` is an error code.
  static func check(_ result: Int, _ code: RPCStatusCode, _ what: String = "zstd") throws(RPCError) {
    guard ZSTD_isError(result) != 0 else { return }
    throw RPCError(code, "\(what): \(String(cString: ZSTD_getErrorName(result)))")
  }
}
