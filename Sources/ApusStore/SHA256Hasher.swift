import ApusProto
internal import COpenSSL

/// Incremental SHA-256 through OpenSSL's EVP interface (uses SHA-NI/AVX2 where present).
public final class SHA256Hasher {
  private let context: OpaquePointer

  public init() {
    guard let ctx = EVP_MD_CTX_new() else { fatalError("EVP_MD_CTX_new failed: out of memory") }
    context = ctx
    EVP_DigestInit_ex(context, EVP_sha256(), nil)
  }

  deinit { EVP_MD_CTX_free(context) }

  public func update(_ raw: UnsafeRawBufferPointer) {
    if let base = raw.baseAddress, raw.count > 0 { EVP_DigestUpdate(context, base, raw.count) }
  }

  public func update(_ bytes: [UInt8]) { bytes.withUnsafeBytes { update($0) } }
  public func update(_ bytes: ArraySlice<UInt8>) { bytes.withUnsafeBytes { update($0) } }

  /// The 32-byte digest. The hasher must not be used afterwards.
  public func finish() -> [UInt8] {
    var out = [UInt8](repeating: 0, count: 32)
    var length: UInt32 = 0
    _ = out.withUnsafeMutableBufferPointer { EVP_DigestFinal_ex(context, $0.baseAddress, &length) }
    return out
  }

  /// The digest of `bytes` in one call.
  public static func digest(of bytes: [UInt8]) -> BlobDigest {
    let h = SHA256Hasher()
    h.update(bytes)
    return BlobDigest(hashBytes: h.finish(), sizeBytes: Int64(bytes.count))
  }
}
