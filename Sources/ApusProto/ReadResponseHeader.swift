extension ReadResponse {
  /// The bytes of an encoded ReadResponse that come before its `data`. `data` is the only
  /// field, so header + data is the whole message: ByteStream reads send store chunks
  /// behind this header without first copying them into a message buffer.
  public static func encodedHeader(dataCount: Int) -> [UInt8] {
    guard dataCount > 0 else { return [] }
    var writer = ProtoWriter(capacity: 11)
    writer.writeTag(10, .lengthDelimited)
    writer.writeVarint(UInt64(dataCount))
    return writer.bytes
  }
}
