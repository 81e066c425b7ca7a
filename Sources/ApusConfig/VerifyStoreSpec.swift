/// `verify`: checks each upload's size (and, with `verify_hash`, its SHA-256) against its
/// digest before `backend` sees it, so a store never holds content under the wrong name.
public struct VerifyStoreSpec: Sendable, Equatable, Decodable {
  /// The store the checked uploads go to. Required.
  public var backend: StoreSpec
  /// Also hash the content (key `verify_hash`, default true); false checks only the size.
  public var verifyHash: Bool

  public init(backend: StoreSpec, verifyHash: Bool = true) {
    self.backend = backend
    self.verifyHash = verifyHash
  }

  public init(from decoder: any Decoder) throws {
    let o = try ConfigObject(decoder, allowedKeys: ["backend", "verify_hash"])
    backend = try o.requiredStore("backend")
    verifyHash = try o.bool("verify_hash") ?? true
  }
}
