/// Parses the `grpc-timeout` header: up to 8 ASCII digits and a unit (H M S m u n).
public enum GRPCTimeout {
  public static func parse(_ value: String) -> Duration? {
    let utf8 = Array(value.utf8)
    guard utf8.count >= 2, utf8.count <= 9, let unit = utf8.last else { return nil }
    var amount: Int64 = 0
    for c in utf8.dropLast() {
      guard c >= UInt8(ascii: "0"), c <= UInt8(ascii: "9") else { return nil }
      amount = amount * 10 + Int64(c - UInt8(ascii: "0"))
    }
    switch unit {
    case UInt8(ascii: "H"): return .seconds(amount * 3600)
    case UInt8(ascii: "M"): return .seconds(amount * 60)
    case UInt8(ascii: "S"): return .seconds(amount)
    case UInt8(ascii: "m"): return .milliseconds(amount)
    case UInt8(ascii: "u"): return .microseconds(amount)
    case UInt8(ascii: "n"): return .nanoseconds(amount)
    default: return nil
    }
  }
}
