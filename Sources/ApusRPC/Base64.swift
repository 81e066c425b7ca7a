/// Base64 for binary (`-bin`) metadata: decodes padded and unpadded input, encodes
/// unpadded, as gRPC's HTTP/2 mapping asks.
public enum Base64 {
  static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

  public static func encode(_ bytes: [UInt8]) -> String {
    var out: [UInt8] = []
    out.reserveCapacity((bytes.count + 2) / 3 * 4)
    var i = 0
    while i + 3 <= bytes.count {
      let v = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
      for shift in [18, 12, 6, 0] { out.append(alphabet[Int(v >> UInt32(shift) & 63)]) }
      i += 3
    }
    let rest = bytes.count - i
    if rest > 0 {
      var v = UInt32(bytes[i]) << 16
      if rest == 2 { v |= UInt32(bytes[i + 1]) << 8 }
      let shifts = rest == 1 ? [18, 12] : [18, 12, 6]
      for shift in shifts { out.append(alphabet[Int(v >> UInt32(shift) & 63)]) }
    }
    return String(decoding: out, as: UTF8.self)
  }

  public static func decode(_ text: String) -> [UInt8]? {
    var values: [UInt8] = []
    values.reserveCapacity(text.utf8.count)
    for c in text.utf8 {
      switch c {
      case UInt8(ascii: "A")...UInt8(ascii: "Z"): values.append(c - UInt8(ascii: "A"))
      case UInt8(ascii: "a")...UInt8(ascii: "z"): values.append(c - UInt8(ascii: "a") + 26)
      case UInt8(ascii: "0")...UInt8(ascii: "9"): values.append(c - UInt8(ascii: "0") + 52)
      case UInt8(ascii: "+"), UInt8(ascii: "-"): values.append(62)
      case UInt8(ascii: "/"), UInt8(ascii: "_"): values.append(63)
      case UInt8(ascii: "="): continue
      default: return nil
      }
    }
    guard values.count % 4 != 1 else { return nil }
    var out: [UInt8] = []
    out.reserveCapacity(values.count * 3 / 4)
    var i = 0
    while i < values.count {
      let chunk = values[i..<min(i + 4, values.count)]
      var v: UInt32 = 0
      for (k, x) in chunk.enumerated() { v |= UInt32(x) << UInt32(18 - 6 * k) }
      let produced = chunk.count - 1
      for k in 0..<produced { out.append(UInt8(truncatingIfNeeded: v >> UInt32(16 - 8 * k))) }
      i += 4
    }
    return out
  }
}
