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
    var stream = z_stream()
    guard apus_deflateInit2(&stream, Z_DEFAULT_COMPRESSION, 15 + 16) == Z_OK else { return [] }
    defer { deflateEnd(&stream) }
    var output = [UInt8](repeating: 0, count: Int(deflateBound(&stream, uLong(input.count))) + 32)
    var input = input
    var produced = 0
    input.withUnsafeMutableBufferPointer { inBuf in
      output.withUnsafeMutableBufferPointer { outBuf in
        stream.next_in = inBuf.baseAddress
        stream.avail_in = uInt(inBuf.count)
        stream.next_out = outBuf.baseAddress
        stream.avail_out = uInt(outBuf.count)
        _ = deflate(&stream, Z_FINISH)
        produced = outBuf.count - Int(stream.avail_out)
      }
    }
    return Array(output[0..<produced])
  }
}
