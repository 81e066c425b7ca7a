internal import COpenSSL
internal import CZstd

// libFuzzer target: the zstd upload path (ZstdUploadDecoder: decompress with the digest's
// size as the cap, the compressed-size bound, the end-of-stream checks), then SHA-256 of the
// output as the store would hash it. Input: 2 bytes of expected size (× 16, up to 1 MiB),
// 1 byte of chunk step, 1 byte of output chunk size; the rest is the compressed stream, or,
// when the step byte is odd, data to compress first (so the successful path is reached too).
// Whatever the decoder accepts must equal libzstd's one-shot ZSTD_decompress of the same
// bytes, byte for byte and by hash; output never passes the expected size or the chunk size.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzZstdUpload(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
  guard size >= 4 else { return 0 }
  let bytes = Array(UnsafeBufferPointer(start: data, count: size))
  var expected = (Int(bytes[0]) << 8 | Int(bytes[1])) * 16
  let step = Int(bytes[2] >> 1) + 1
  let maxOut = Int(bytes[3]) * 64 + 1
  var stream = Array(bytes.dropFirst(4))
  if bytes[2] & 1 == 1 {
    // Compress the body (often below its size: the expected size then disagrees).
    guard let frame = try? ZstdCompressor.compress(stream, level: Int32(bytes[3] % 5) + 1) else {
      preconditionFailure("compressing a valid input failed")
    }
    if bytes[0] & 0x80 == 0 { expected = stream.count }
    stream = frame
  }

  let hasher = Hasher256()
  var output: [UInt8] = []
  var accepted = false
  do {
    let decoder = try ZstdUploadDecoder(expectedSize: Int64(expected))
    var offset = 0
    repeat {
      let end = min(offset + step, stream.count)
      try decoder.push(stream[offset..<end])
      while let chunk = try decoder.next(maxBytes: maxOut) {
        precondition(!chunk.isEmpty && chunk.count <= maxOut, "chunk outside 1...maxBytes")
        output += chunk
        hasher.update(chunk)
        precondition(output.count <= expected, "output passed the expected size")
      }
      offset = end
    } while offset < stream.count
    try decoder.finish()
    precondition(output.count == expected, "accepted with the wrong size")
    accepted = true
  } catch {
    precondition(error.code == .invalidArgument, "unexpected status \(error)")
  }
  guard accepted else { return 0 }

  // The reference: libzstd's one-shot decoder into exactly the expected size.
  var reference = [UInt8](repeating: 0, count: expected + 1)
  let n = reference.withUnsafeMutableBytes { out in
    stream.withUnsafeBytes { ZSTD_decompress(out.baseAddress, out.count, $0.baseAddress, $0.count) }
  }
  precondition(ZSTD_isError(n) == 0 && n == expected, "accepted what libzstd's one-shot refuses")
  reference.removeLast()
  precondition(reference == output, "decoded bytes differ from libzstd's one-shot")
  let h = Hasher256()
  h.update(reference)
  precondition(h.finish() == hasher.finish(), "hash of the streamed output differs")
  if bytes[2] & 1 == 1 && bytes[0] & 0x80 == 0 {
    precondition(output == Array(bytes.dropFirst(4)), "compress → decode round trip")
  }
  return 0
}

/// SHA-256 through OpenSSL EVP, fed chunk by chunk as a store hashes an upload.
final class Hasher256 {
  let context = EVP_MD_CTX_new()
  init() { EVP_DigestInit_ex(context, EVP_sha256(), nil) }
  deinit { EVP_MD_CTX_free(context) }
  func update(_ bytes: [UInt8]) { bytes.withUnsafeBytes { _ = EVP_DigestUpdate(context, $0.baseAddress, $0.count) } }
  func finish() -> [UInt8] {
    var out = [UInt8](repeating: 0, count: 32)
    var length: UInt32 = 0
    _ = out.withUnsafeMutableBufferPointer { EVP_DigestFinal_ex(context, $0.baseAddress, &length) }
    return out
  }
}
