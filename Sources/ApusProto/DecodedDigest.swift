/// A `Digest` sub-message as the server reads it: straight into a ``BlobDigest`` when it is
/// well-formed, so the common case costs no 64-character `String`; otherwise kept as
/// received, so the INVALID_ARGUMENT message can quote it.
public enum DecodedDigest: Sendable, Equatable {
  case valid(BlobDigest)
  case invalid(Digest)

  /// The wire form, whichever case this is.
  public var proto: Digest {
    switch self {
    case .valid(let digest): digest.proto
    case .invalid(let digest): digest
    }
  }
}
