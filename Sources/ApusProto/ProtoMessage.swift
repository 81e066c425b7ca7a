/// A protobuf message with a hand-written codec.
///
/// Conformers decode with a `switch` over field numbers and skip unknown fields; they
/// encode every field through ``ProtoWriter``, which drops proto3 defaults.
public protocol ProtoMessage: Sendable, Equatable {
  init()
  /// Decodes fields until the reader is exhausted.
  init(reading reader: inout ProtoReader) throws
  func encode(to writer: inout ProtoWriter)
}

extension ProtoMessage {
  public init(serializedBytes bytes: [UInt8]) throws {
    var reader = ProtoReader(bytes)
    try self.init(reading: &reader)
  }

  public func serializedBytes() -> [UInt8] {
    var writer = ProtoWriter()
    encode(to: &writer)
    return writer.bytes
  }
}
