/// Appends protobuf wire-format fields to a byte array.
///
/// Proto3 semantics: scalar fields equal to their default are not written, so callers can
/// write every field unconditionally and get the canonical encoding `protoc` produces.
public struct ProtoWriter: Sendable {
  public internal(set) var bytes: [UInt8]

  public init(capacity: Int = 64) {
    bytes = []
    bytes.reserveCapacity(capacity)
  }

  public mutating func writeVarint(_ value: UInt64) {
    var v = value
    while v >= 0x80 {
      bytes.append(UInt8(truncatingIfNeeded: v) | 0x80)
      v >>= 7
    }
    bytes.append(UInt8(v))
  }

  public mutating func writeTag(_ field: Int, _ wireType: WireType) {
    writeVarint(UInt64(field) << 3 | UInt64(wireType.rawValue))
  }

  public mutating func uint64(_ field: Int, _ value: UInt64) {
    guard value != 0 else { return }
    writeTag(field, .varint)
    writeVarint(value)
  }

  public mutating func int64(_ field: Int, _ value: Int64) {
    uint64(field, UInt64(bitPattern: value))
  }

  /// int32 negative values are sign-extended to 10 bytes, as protobuf requires.
  public mutating func int32(_ field: Int, _ value: Int32) {
    uint64(field, UInt64(bitPattern: Int64(value)))
  }

  public mutating func bool(_ field: Int, _ value: Bool) {
    uint64(field, value ? 1 : 0)
  }

  public mutating func bytes(_ field: Int, _ value: [UInt8]) {
    guard !value.isEmpty else { return }
    writeTag(field, .lengthDelimited)
    writeVarint(UInt64(value.count))
    bytes.append(contentsOf: value)
  }

  public mutating func string(_ field: Int, _ value: String) {
    guard !value.isEmpty else { return }
    writeTag(field, .lengthDelimited)
    var copy = value
    copy.withUTF8 { utf8 in
      writeVarint(UInt64(utf8.count))
      bytes.append(contentsOf: utf8)
    }
  }

  public mutating func strings(_ field: Int, _ values: [String]) {
    for value in values {
      writeTag(field, .lengthDelimited)
      writeVarint(UInt64(value.utf8.count))
      bytes.append(contentsOf: value.utf8)
    }
  }

  /// Writes a sub-message. `nil` is omitted; a present but empty message is written as an
  /// empty length-delimited field so that presence survives the round trip.
  public mutating func message<M: ProtoMessage>(_ field: Int, _ value: M?) {
    guard let value else { return }
    writeNested(field) { value.encode(to: &$0) }
  }

  public mutating func messages<M: ProtoMessage>(_ field: Int, _ values: [M]) {
    for value in values { writeNested(field) { value.encode(to: &$0) } }
  }

  /// Packed repeated varints (the proto3 default for repeated enums and integers).
  public mutating func packedVarints(_ field: Int, _ values: [UInt64]) {
    guard !values.isEmpty else { return }
    var inner = ProtoWriter(capacity: values.count)
    for v in values { inner.writeVarint(v) }
    bytes(field, inner.bytes)
  }

  /// Encodes the nested content into this buffer directly, then inserts its length prefix.
  private mutating func writeNested(_ field: Int, _ body: (inout ProtoWriter) -> Void) {
    writeTag(field, .lengthDelimited)
    var inner = ProtoWriter(capacity: 32)
    body(&inner)
    writeVarint(UInt64(inner.bytes.count))
    bytes.append(contentsOf: inner.bytes)
  }
}
