internal import CNGHTTP2

/// Calls `body` with an `nghttp2_nv` array for `headers`. nghttp2 copies names and values
/// during `nghttp2_submit_*`, so the storage only has to live for the call.
func withHeaderList<R>(
  _ headers: [(String, String)], _ body: (UnsafePointer<nghttp2_nv>, Int) -> R
) -> R {
  var storage: [UInt8] = []
  var offsets: [(Int, Int, Int, Int)] = []
  for (name, value) in headers {
    let n = storage.count
    storage.append(contentsOf: name.utf8)
    let v = storage.count
    storage.append(contentsOf: value.utf8)
    offsets.append((n, name.utf8.count, v, value.utf8.count))
  }
  storage.append(0)  // never empty, so baseAddress is non-nil
  return storage.withUnsafeMutableBufferPointer { bytes in
    let base = bytes.baseAddress!
    var nva = offsets.map { (n, nl, v, vl) in
      nghttp2_nv(
        name: base + n, value: base + v, namelen: nl, valuelen: vl,
        flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue))
    }
    return nva.withUnsafeMutableBufferPointer { nv in
      body(UnsafePointer(nv.baseAddress!), nv.count)
    }
  }
}
