internal import CZlib

/// gzip for `grpc-encoding: gzip` messages, through zlib.
public enum Gzip {
  /// Inflates `input`, failing with RESOURCE_EXHAUSTED once the output passes `limit`
  /// (a decompression bomb costs at most `limit` bytes of memory).
  public static func decompress(_ input: [UInt8], limit: Int) throws(RPCError) -> [UInt8] {
    var stream = z_stream()
    // 15 + 16: gzip wrapper only, as the gRPC spec's "gzip" names.
    guard apus_inflateInit2(&stream, 15 + 16) == Z_OK else {
      throw RPCError(.internal, "zlib inflateInit2 failed")
    }
    defer { inflateEnd(&stream) }
    var output: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 64 * 1024)
    var input = input
    var status: Int32 = Z_OK
    input.withUnsafeMutableBufferPointer { inBuf in
      stream.next_in = inBuf.baseAddress
      stream.avail_in = uInt(inBuf.count)
      repeat {
        chunk.withUnsafeMutableBufferPointer { outBuf in
          stream.next_out = outBuf.baseAddress
          stream.avail_out = uInt(outBuf.count)
          status = inflate(&stream, Z_NO_FLUSH)
          output.append(contentsOf: outBuf[0..<(outBuf.count - Int(stream.avail_out))])
        }
      } while status == Z_OK && output.count <= limit
    }
    guard output.count <= limit else {
      throw RPCError(.resourceExhausted, "decompressed message exceeds \(limit) bytes")
    }
    guard status == Z_STREAM_END else {
      throw RPCError(.internal, "invalid gzip message (zlib status \(status))")
    }
    return output
  }

  public static func compress(_ input: [UInt8]) -> [UInt8] {
    compress(input[...], level: Z_DEFAULT_COMPRESSION, smallerThan: nil) ?? []
  }

  /// Deflates `input` into a gzip member at `level` (1 fastest … 9 smallest). With
  /// `smallerThan`, the output is bounded to fewer bytes than that and nil says it did not fit
  /// (a message not worth compressing costs no larger buffer than itself).
  static func compress(_ input: ArraySlice<UInt8>, level: Int32, smallerThan: Int?) -> [UInt8]? {
    var stream = z_stream()
    guard apus_deflateInit2(&stream, level, 15 + 16) == Z_OK else { return nil }
    defer { deflateEnd(&stream) }
    let bound = Int(deflateBound(&stream, uLong(input.count))) + 32
    let capacity = smallerThan.map { min(bound, max($0 - 1, 0)) } ?? bound
    guard capacity > 0 else { return nil }
    var output = [UInt8](repeating: 0, count: capacity)
    var status: Int32 = Z_OK
    var produced = 0
    input.withUnsafeBufferPointer { inBuf in
      output.withUnsafeMutableBufferPointer { outBuf in
        // zlib never writes through next_in; its C prototype just is not const.
        stream.next_in = UnsafeMutablePointer(mutating: inBuf.baseAddress)
        stream.avail_in = uInt(inBuf.count)
        stream.next_out = outBuf.baseAddress
        stream.avail_out = uInt(outBuf.count)
        status = deflate(&stream, Z_FINISH)
        produced = outBuf.count - Int(stream.avail_out)
      }
    }
    guard status == Z_STREAM_END else { return nil }
    output.removeSubrange(produced...)
    return output
  }
}
