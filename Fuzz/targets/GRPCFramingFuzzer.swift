// libFuzzer target: the gRPC message deframer, plus the header codecs that read peer input
// (grpc-timeout, percent-decoding, base64). The first byte picks how the input is split
// into DATA chunks, so chunk boundaries are fuzzed too.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzGRPCFraming(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
  guard size > 0 else { return 0 }
  let bytes = Array(UnsafeBufferPointer(start: data, count: size))
  let step = Int(bytes[0]) + 1
  let body = Array(bytes.dropFirst())
  var deframer = GRPCMessageDeframer(maxMessageBytes: 4096)
  var total = 0
  var offset = 0
  do {
    while offset < body.count {
      let end = min(offset + step, body.count)
      let messages = try body[offset..<end].withUnsafeBytes { try deframer.append($0) }
      for m in messages {
        precondition(m.payload.count <= 4096, "message over the limit")
        total += 5 + m.payload.count
      }
      offset = end
    }
    precondition(total + deframer.bufferedBytes == body.count, "bytes lost or invented")
  } catch {}
  let text = String(decoding: body, as: UTF8.self)
  _ = GRPCTimeout.parse(text)
  precondition(PercentEncoding.decode(PercentEncoding.encode(text)) == text, "percent round trip")
  if let decoded = Base64.decode(text) {
    precondition(Base64.decode(Base64.encode(decoded)) == decoded, "base64 round trip")
  }
  return 0
}
