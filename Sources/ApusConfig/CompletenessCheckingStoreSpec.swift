/// `completeness_checking`: an action cache that returns a result only if every blob it
/// names is in `cas`, so clients never get a hit they cannot download.
public struct CompletenessCheckingStoreSpec: Sendable, Equatable, Decodable {
  /// The action cache. Required.
  public var backend: StoreSpec
  /// The CAS the results' blobs must be in. Required.
  public var cas: StoreSpec

  public init(backend: StoreSpec, cas: StoreSpec) {
    self.backend = backend
    self.cas = cas
  }

  public init(from decoder: any Decoder) throws {
    let o = try ConfigObject(decoder, allowedKeys: ["backend", "cas"])
    backend = try o.requiredStore("backend")
    cas = try o.requiredStore("cas")
  }
}
