/// `GetActionResultRequest` as the server reads it: `action_digest` decodes straight into
/// a ``BlobDigest`` from the received bytes (see ``DecodedDigest``).
///
/// The same wire form as ``GetActionResultRequest``; decoding rejects the same malformed
/// input with the same errors.
public struct DecodedGetActionResultRequest: ProtoMessage {
  public var instanceName: String = ""
  /// nil: the field is absent.
  public var actionDigest: DecodedDigest?
  public var inlineStdout: Bool = false
  public var inlineStderr: Bool = false
  public var inlineOutputFiles: [String] = []
  public var digestFunction: DigestFunction = DigestFunction(rawValue: 0)

  public init() {}

  public init(reading reader: inout ProtoReader) throws {
    while let tag = try reader.nextTag() {
      switch tag.number {
      case 1: instanceName = try reader.string(tag)
      case 2: actionDigest = try reader.digest(tag)
      case 3: inlineStdout = try reader.bool(tag)
      case 4: inlineStderr = try reader.bool(tag)
      case 5: inlineOutputFiles.append(try reader.string(tag))
      case 6: digestFunction = DigestFunction(rawValue: try reader.int32(tag))
      default: try reader.skip(tag)
      }
    }
  }

  public func encode(to writer: inout ProtoWriter) {
    writer.string(1, instanceName)
    writer.message(2, actionDigest?.proto)
    writer.bool(3, inlineStdout)
    writer.bool(4, inlineStderr)
    writer.strings(5, inlineOutputFiles)
    writer.int32(6, digestFunction.rawValue)
  }
}
