/// The protobuf wire types this codec understands (groups, 3 and 4, are rejected).
public enum WireType: UInt8, Sendable {
  case varint = 0
  case fixed64 = 1
  case lengthDelimited = 2
  case fixed32 = 5
}

/// A decoded field key: field number plus wire type.
public struct FieldTag: Sendable, Equatable {
  public var number: Int
  public var wireType: WireType
}
