import ApusProto

/// A parsed ByteStream resource name.
///
/// Download: `{instance}/blobs/{hash}/{size}`; upload:
/// `{instance}/uploads/{uuid}/blobs/{hash}/{size}{/optional_metadata}`; the instance part
/// may be empty (no leading slash) or several segments. Compressed forms
/// (`compressed-blobs/{compressor}/…`) carry the compressor; REAPI 2.3's optional
/// `{digest_function}/` segment before the hash is recognised by its name (lowercase
/// `DigestFunction` value) so the service can refuse any but sha256 clearly.
public struct ResourceName: Sendable, Equatable {
  public var instanceName: String
  public var digest: BlobDigest
  /// The upload id, for upload names.
  public var uploadID: String?
  /// The compressor segment of a `compressed-blobs` name.
  public var compressor: String?
  /// The digest-function segment before the hash, when present (e.g. `blake3`).
  public var digestFunction: String?

  /// REAPI's `DigestFunction.Value` names in lowercase, as the segment spells them.
  static let digestFunctionNames: Set<String> = [
    "sha256", "sha1", "md5", "vso", "sha384", "sha512", "murmur3", "sha256tree", "blake3",
  ]

  public enum Kind: Sendable { case read, write }

  /// Parses `name`, or explains in one line why it is not a valid resource name.
  public static func parse(_ name: String, kind: Kind) -> Result<ResourceName, ResourceNameError> {
    let segments = name.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
    let fail = { (why: String) in Result<ResourceName, ResourceNameError>.failure(.init(name: name, reason: why)) }
    let anchor = kind == .write ? "uploads" : nil
    // Find where the instance name ends: the first reserved segment of the expected shape.
    var i = 0
    if let anchor {
      guard let at = segments.firstIndex(of: anchor) else { return fail("expected \"…uploads/{uuid}/blobs/{hash}/{size}\"") }
      i = at
    } else {
      guard let at = segments.firstIndex(where: { $0 == "blobs" || $0 == "compressed-blobs" }) else {
        return fail("expected \"…blobs/{hash}/{size}\"")
      }
      i = at
    }
    let instance = segments[..<i].joined(separator: "/")
    if segments[..<i].contains(where: \.isEmpty) && i > 0 {
      return fail("the instance name has an empty segment")
    }
    var rest = Array(segments[i...])
    var uploadID: String?
    if kind == .write {
      guard rest.count >= 2, !rest[1].isEmpty else { return fail("missing upload id") }
      uploadID = rest[1]
      rest.removeFirst(2)
    }
    var compressor: String?
    guard let first = rest.first else { return fail("missing \"blobs\" segment") }
    if first == "compressed-blobs" {
      guard rest.count >= 2 else { return fail("missing compressor") }
      compressor = rest[1]
      rest.removeFirst(2)
    } else if first == "blobs" {
      rest.removeFirst()
    } else {
      return fail("expected \"blobs\" or \"compressed-blobs\" after the upload id, got \"\(first)\"")
    }
    var digestFunction: String?
    if rest.count >= 3, digestFunctionNames.contains(rest[0]) {
      digestFunction = rest[0]
      rest.removeFirst()
    }
    guard rest.count >= 2 else { return fail("expected {hash}/{size} after \"blobs\"") }
    // Reads end at the size; uploads may carry optional metadata segments after it.
    if kind == .read && rest.count != 2 { return fail("unexpected segments after the size") }
    guard let size = Int64(rest[1]) else {
      return fail("size \"\(rest[1])\" is not an integer")
    }
    guard size >= 0 else { return fail("size \(size) is negative") }
    guard let digest = BlobDigest(hash: rest[0], sizeBytes: size) else {
      return fail("hash \"\(rest[0])\" is not 64 lowercase hex digits (SHA-256)")
    }
    return .success(
      ResourceName(
        instanceName: instance, digest: digest, uploadID: uploadID, compressor: compressor,
        digestFunction: digestFunction))
  }
}

/// Why a resource name was refused; reported as INVALID_ARGUMENT.
public struct ResourceNameError: Error, Sendable, Equatable, CustomStringConvertible {
  public var name: String
  public var reason: String
  public var description: String { "invalid resource name \"\(name)\": \(reason)" }
}
