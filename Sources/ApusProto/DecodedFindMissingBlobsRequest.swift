/// `FindMissingBlobsRequest` as the server reads it: `blob_digests` decode straight into
/// ``BlobDigest``s from the received bytes, with no `Digest` or hex `String` per entry.
///
/// The same wire form as ``FindMissingBlobsRequest``; decoding rejects the same malformed
/// input with the same errors. A malformed digest is not a decoding error (the handler
/// reports it as INVALID_ARGUMENT after its other checks), so the first one is kept with its
/// index and the digests after it are not kept: the request fails on it anyway.
public struct DecodedFindMissingBlobsRequest: ProtoMessage {
  public var instanceName: String = ""
  /// The well-formed digests before ``firstInvalid``, in request order.
  public var digests: [BlobDigest] = []
  /// The first malformed entry of `blob_digests` and its index there.
  public var firstInvalid: (index: Int, digest: Digest)?
  public var digestFunction: DigestFunction = DigestFunction(rawValue: 0)

  /// A well-formed entry takes at least 68 bytes (two tags, two lengths and 64 hex digits),
  /// so this many bytes per digest bounds the count from above for the array's capacity.
  static let minDigestEntryBytes = 68

  public init() {}

  public init(reading reader: inout ProtoReader) throws {
    var count = 0
    while let tag = try reader.nextTag() {
      switch tag.number {
      case 1: instanceName = try reader.string(tag)
      case 2:
        if digests.capacity == 0 {
          digests.reserveCapacity((reader.end - reader.index) / Self.minDigestEntryBytes + 1)
        }
        let digest = try reader.digest(tag)
        if firstInvalid == nil {
          switch digest {
          case .valid(let valid): digests.append(valid)
          case .invalid(let invalid): firstInvalid = (count, invalid)
          }
        }
        count += 1
      case 3: digestFunction = DigestFunction(rawValue: try reader.int32(tag))
      default: try reader.skip(tag)
      }
    }
  }

  public func encode(to writer: inout ProtoWriter) {
    writer.string(1, instanceName)
    for digest in digests { writer.digest(2, digest) }
    writer.message(2, firstInvalid?.digest)
    writer.int32(3, digestFunction.rawValue)
  }

  public static func == (a: Self, b: Self) -> Bool {
    a.instanceName == b.instanceName && a.digests == b.digests
      && a.firstInvalid?.index == b.firstInvalid?.index && a.firstInvalid?.digest == b.firstInvalid?.digest
      && a.digestFunction == b.digestFunction
  }
}
