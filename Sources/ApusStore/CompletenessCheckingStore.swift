import ApusProto

/// An action cache that only returns an ActionResult whose blobs are all in the CAS: every
/// output file, stdout/stderr, each output directory's Tree and the files in it. Otherwise
/// it answers "absent" (NOT_FOUND), so the client rebuilds instead of failing to download.
public struct CompletenessCheckingStore: BlobStore {
  let backend: any BlobStore
  let cas: any BlobStore
  static let maxResultBytes = 16 << 20

  public init(backend: any BlobStore, cas: any BlobStore) {
    self.backend = backend
    self.cas = cas
  }

  /// The result's bytes if it is complete, else `nil`.
  func completeResult(_ digest: BlobDigest) async throws -> [UInt8]? {
    guard let bytes = try await backend.readAll(digest, maxBytes: Self.maxResultBytes),
      let result = try? ActionResult(serializedBytes: bytes)
    else { return nil }
    var needed: [BlobDigest] = []
    needed += result.outputFiles.compactMap { $0.digest?.validated }
    needed += [result.stdoutDigest, result.stderrDigest].compactMap { $0?.validated }
    for directory in result.outputDirectories {
      guard let treeDigest = directory.treeDigest?.validated else { return nil }
      guard let treeBytes = try await cas.readAll(treeDigest, maxBytes: Self.maxResultBytes),
        let tree = try? Tree(serializedBytes: treeBytes)
      else { return nil }
      for dir in [tree.root].compactMap({ $0 }) + tree.children {
        needed += dir.files.compactMap { $0.digest?.validated }
      }
    }
    let missing = try await cas.findMissing(Array(Set(needed.filter { !$0.isEmpty })))
    return missing.isEmpty ? bytes : nil
  }

  public func findMissing(_ digests: [BlobDigest]) async throws -> [BlobDigest] {
    var missing: [BlobDigest] = []
    for d in digests where try await completeResult(d) == nil { missing.append(d) }
    return missing
  }

  public func read(
    _ digest: BlobDigest, offset: Int64, limit: Int64?,
    into sink: (ArraySlice<UInt8>) async throws -> Void
  ) async throws -> Bool {
    guard let bytes = try await completeResult(digest) else { return false }
    let start = Int(min(max(offset, 0), Int64(bytes.count)))
    let end = limit.map { min(bytes.count, start + Int(min($0, Int64(bytes.count)))) } ?? bytes.count
    try await sink(bytes[start..<end])
    return true
  }

  public func write<Chunks: AsyncSequence<ArraySlice<UInt8>, any Error>>(
    _ digest: BlobDigest, from chunks: Chunks
  ) async throws {
    try await backend.write(digest, from: chunks)
  }
}
