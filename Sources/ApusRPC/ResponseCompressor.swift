/// Compresses one call's response messages: those of at least `minBytes` that shrink.
struct ResponseCompressor: Sendable, Equatable {
  let encoding: MessageEncoding
  let minBytes: Int

  /// The framed message (prefix and payload parts) for `parts`, compressed when it pays.
  func frame(_ parts: [ArraySlice<UInt8>]) -> [ArraySlice<UInt8>] {
    let length = parts.reduce(0) { $0 + $1.count }
    if length >= minBytes {
      let whole = parts.count == 1 ? parts[0] : parts.reduce(into: [UInt8]()) { $0 += $1 }[...]
      if let packed = encoding.compress(whole) {
        return [grpcMessagePrefix(length: packed.count, compressed: true)[...], packed[...]]
      }
    }
    return [grpcMessagePrefix(length: length)[...]] + parts
  }
}
