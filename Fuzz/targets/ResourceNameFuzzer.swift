// libFuzzer target: ByteStream resource-name parsing. A parsed name must re-render to a
// name that parses to the same value.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzResourceName(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
  let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
  for kind in [ResourceName.Kind.read, .write] {
    guard case .success(let name) = ResourceName.parse(text, kind: kind) else { continue }
    var rendered = name.instanceName.isEmpty ? "" : name.instanceName + "/"
    if let upload = name.uploadID { rendered += "uploads/\(upload)/" }
    if let c = name.compressor {
      rendered += "compressed-blobs/\(c)/"
    } else {
      rendered += "blobs/"
    }
    rendered += "\(name.digest.hashHex)/\(name.digest.sizeBytes)"
    guard case .success(let again) = ResourceName.parse(rendered, kind: kind), again == name else {
      fatalError("\(text) → \(rendered) does not re-parse to the same name")
    }
  }
  return 0
}
