/// Why a byte string is not a valid encoding of the message being decoded.
///
/// Decoders never trap on malformed input; every failure surfaces as this error so the
/// gRPC layer can answer with a status instead of crashing the process.
public struct ProtoDecodingError: Error, Sendable, Equatable, CustomStringConvertible {
  public var message: String

  public init(_ message: String) {
    self.message = message
  }

  public var description: String { "protobuf decoding failed: \(message)" }
}
