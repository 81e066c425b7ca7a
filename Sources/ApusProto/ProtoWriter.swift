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

  public mutating func bytes(_ field: Int, _ value: [UInt8]) { bytes(field, value[...]) }

  public mutating func bytes(_ field: Int, _ value: ArraySlice<UInt8>) {
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

  /// A `Digest` sub-message from a ``BlobDigest``, its hex written straight into the
  /// buffer: no `Digest` and no hex `String` on the way. The bytes `message(field,
  /// digest.proto)` writes.
  public mutating func digest(_ field: Int, _ digest: BlobDigest) {
    writeTag(field, .lengthDelimited)
    writeVarint(UInt64(Self.digestBodySize(digest)))
    writeTag(1, .lengthDelimited)
    writeVarint(64)
    let start = bytes.count
    bytes.append(contentsOf: repeatElement(0, count: 64))
    // Safe: the 64 bytes from `start` were just appended; writeHex checks the count.
    bytes.withUnsafeMutableBufferPointer { buffer in
      digest.writeHex(into: UnsafeMutableBufferPointer(rebasing: buffer[start...]))
    }
    int64(2, digest.sizeBytes)
  }

  /// The bytes ``digest(_:_:)`` writes, to size a buffer ahead.
  public static func digestFieldSize(_ field: Int, _ digest: BlobDigest) -> Int {
    let body = digestBodySize(digest)
    return varintSize(UInt64(field) << 3) + varintSize(UInt64(body)) + body
  }

  /// A Digest's content: hash tag, length and 64 digits, then the size unless it is 0.
  private static func digestBodySize(_ digest: BlobDigest) -> Int {
    digest.sizeBytes == 0 ? 66 : 67 + varintSize(UInt64(bitPattern: digest.sizeBytes))
  }

  /// Bytes of `value` as a varint.
  static func varintSize(_ value: UInt64) -> Int {
    max(1, (64 - value.leadingZeroBitCount + 6) / 7)
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
