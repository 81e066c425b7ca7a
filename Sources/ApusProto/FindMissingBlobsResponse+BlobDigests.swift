extension FindMissingBlobsResponse {
  /// The encoded response naming `missing`, written from the ``BlobDigest``s into one buffer
  /// of the exact size: what `serializedBytes()` gives with `missing.map(\.proto)`, without
  /// a `Digest` and a hex `String` per entry.
  public static func serializedBytes(missing: [BlobDigest]) -> [UInt8] {
    var size = 0
    for digest in missing { size += ProtoWriter.digestFieldSize(2, digest) }
    var writer = ProtoWriter(capacity: size)
    for digest in missing { writer.digest(2, digest) }
    return writer.bytes
  }
}
