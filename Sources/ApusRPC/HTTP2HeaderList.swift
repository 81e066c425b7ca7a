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

/// A constant header list as an `nghttp2_nv` array built once (the OK response headers and
/// trailers), so a call does not re-encode the same strings on every response.
final class StaticHeaderList: @unchecked Sendable {
  // @unchecked: the pointers are written in `init` only and read-only afterwards; nghttp2
  // copies from them during `nghttp2_submit_*` and never writes through them.
  private let bytes: UnsafeMutableBufferPointer<UInt8>
  private let nv: UnsafeMutableBufferPointer<nghttp2_nv>

  init(_ headers: [(String, String)]) {
    let total = headers.reduce(0) { $0 + $1.0.utf8.count + $1.1.utf8.count }
    bytes = .allocate(capacity: max(total, 1))
    nv = .allocate(capacity: max(headers.count, 1))
    // Safe: every name and value is copied into `bytes`, sized above for all of them, and
    // each `nghttp2_nv` points into it; both buffers live as long as this object.
    var offset = 0
    for (i, (name, value)) in headers.enumerated() {
      let n = offset
      offset = bytes[offset...].initialize(from: name.utf8).1
      let v = offset
      offset = bytes[offset...].initialize(from: value.utf8).1
      nv[i] = nghttp2_nv(
        name: bytes.baseAddress! + n, value: bytes.baseAddress! + v, namelen: v - n,
        valuelen: offset - v, flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue))
    }
    count = headers.count
  }

  let count: Int

  deinit {
    bytes.deallocate()
    nv.deallocate()
  }

  /// Calls `body` with the array; it is valid for the call only.
  func withList<R>(_ body: (UnsafePointer<nghttp2_nv>, Int) -> R) -> R {
    body(UnsafePointer(nv.baseAddress!), count)
  }
}
