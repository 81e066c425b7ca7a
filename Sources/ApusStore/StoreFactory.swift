import ApusConfig
import NIOPosix

/// Builds store trees from config specs, recursively.
public enum StoreFactory {
  public static func make(_ spec: StoreSpec, home: String) async throws -> any BlobStore {
    switch spec {
    case .memory(let m):
      return MemoryStore(
        limits: .init(
          maxBytes: m.maxBytes, maxCount: m.maxCount.map { Int($0) },
          maxSeconds: m.maxSeconds.map { UInt32(clamping: $0) }))
    case .filesystem(let f):
      return try await FilesystemStore.open(root: expandTilde(f.path, home: home), maxBytes: f.maxBytes)
    case .verify(let backend, let verifyHash):
      return VerifyStore(backend: try await make(backend, home: home), verifyHash: verifyHash)
    }
  }

  static func expandTilde(_ path: String, home: String) -> String {
    if path == "~" { return home }
    if path.hasPrefix("~/") { return home + path.dropFirst() }
    return path
  }
}
