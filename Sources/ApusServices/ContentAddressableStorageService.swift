import ApusProto
import ApusRPC
import ApusStore

/// `build.bazel.remote.execution.v2.ContentAddressableStorage`.
struct ContentAddressableStorageService {
  let table: InstanceTable
  static let prefix = "/build.bazel.remote.execution.v2.ContentAddressableStorage/"
  /// GetTree pages hold at most this many directories unless the client asks for fewer.
  static let maxTreePage = 1000
  /// BatchReadBlobs compresses blobs from this size when the client accepts zstd: below it a
  /// frame's header and the work cost more than they save.
  static let minCompressedBatchBlob = 512

  func register(on router: inout RPCRouter) {
    let table = self.table
    router.unary(
      Self.prefix + "FindMissingBlobs", DecodedFindMissingBlobsRequest.self, auth: table.authorizer,
      instance: { $0.instanceName },
      now: { request, _ in
        let (cas, digests) = try Self.findMissingQuery(table, request)
        guard let missing = try cas.findMissingNow(digests) else { return nil }
        return FindMissingBlobsResponse.serializedBytes(missing: missing)
      }
    ) { request, _ in
      FindMissingBlobsResponse.serializedBytes(missing: try await Self.findMissing(table, request))
    }
    router.unary(
      Self.prefix + "BatchUpdateBlobs", BatchUpdateBlobsRequest.self, auth: table.authorizer,
      instance: { $0.instanceName }
    ) { request, _ in
      try await Self.batchUpdate(table, request).serializedBytes()
    }
    router.unary(
      Self.prefix + "BatchReadBlobs", BatchReadBlobsRequest.self, auth: table.authorizer,
      instance: { $0.instanceName }
    ) { request, _ in
      try await Self.batchRead(table, request).serializedBytes()
    }
    router.serverStreaming(
      Self.prefix + "GetTree", GetTreeRequest.self, auth: table.authorizer,
      instance: { $0.instanceName }
    ) { request, writer, _ in
      try await Self.getTree(table, request, writer)
    }
  }

  /// The digests of `request` the CAS lacks, in request order; the empty blob is never
  /// missing.
  static func findMissing(
    _ table: InstanceTable, _ request: DecodedFindMissingBlobsRequest
  ) async throws -> [BlobDigest] {
    let (cas, digests) = try findMissingQuery(table, request)
    return try await cas.findMissing(digests)
  }

  /// FindMissingBlobs's checks: the CAS and the valid digests to look up (the empty blob
  /// is always present).
  static func findMissingQuery(
    _ table: InstanceTable, _ request: DecodedFindMissingBlobsRequest
  ) throws -> (any BlobStore, [BlobDigest]) {
    try DigestCheck.checkFunction(request.digestFunction)
    let cas = try table.cas(request.instanceName)
    if let (i, invalid) = request.firstInvalid {
      _ = try DigestCheck.validate(invalid, "blob_digests[\(i)]")
    }
    var digests = request.digests
    if digests.contains(where: \.isEmpty) { digests.removeAll(where: \.isEmpty) }
    return (cas, digests)
  }

  static func batchUpdate(
    _ table: InstanceTable, _ request: BatchUpdateBlobsRequest
  ) async throws -> BatchUpdateBlobsResponse {
    try DigestCheck.checkFunction(request.digestFunction)
    let cas = try table.cas(request.instanceName)
    let total = request.requests.reduce(Int64(0)) { $0 + Int64($1.data.count) }
    guard total <= table.maxBatchTotalBytes else {
      throw RPCError.invalidArgument(
        "batch carries \(total) bytes, over the limit of \(table.maxBatchTotalBytes)")
    }
    // Compressed blobs are inflated in memory, so what they decompress to (their digests'
    // sizes) is held to the same limit: a small batch cannot claim gigabytes.
    let inflated = request.requests.reduce(Int64(0)) {
      $0 + ($1.compressor == .identity ? Int64($1.data.count) : max(0, $1.digest?.sizeBytes ?? 0))
    }
    guard inflated <= table.maxBatchTotalBytes else {
      throw RPCError.invalidArgument(
        "batch decompresses to \(inflated) bytes, over the limit of \(table.maxBatchTotalBytes)")
    }
    // Up to 16 blobs are written at once: with a remote slow tier each write is a round
    // trip, and one blob waiting on a timeout must not hold up the rest.
    func store(_ i: Int, _ item: BatchUpdateBlobsRequest.Request) async -> BatchUpdateBlobsResponse.Response {
      var entry = BatchUpdateBlobsResponse.Response()
      entry.digest = item.digest
      do {
        let digest = try DigestCheck.validate(item.digest, "requests[\(i)].digest")
        var data = item.data
        switch item.compressor {
        case .identity: break
        case .zstd:
          CompressionMetrics.uploadCompressed.increment(by: Int64(data.count))
          data = try ZstdUploadDecoder.decodeAll(data, expectedSize: digest.sizeBytes)
          CompressionMetrics.uploadUncompressed.increment(by: Int64(data.count))
        default:
          throw RPCError.invalidArgument(
            "requests[\(i)].compressor \(item.compressor.rawValue) is not supported; "
              + "this server accepts IDENTITY (0) and ZSTD (1)")
        }
        guard Int64(data.count) == digest.sizeBytes else {
          throw RPCError.invalidArgument(
            "requests[\(i)] has \(data.count) bytes, the digest says \(digest.sizeBytes)")
        }
        if !digest.isEmpty { try await cas.writeAll(digest, data) }
        entry.status = .ok
      } catch {
        entry.status = RPCError(from: error).statusMessage
      }
      return entry
    }
    var response = BatchUpdateBlobsResponse()
    let items = request.requests
    if items.count == 1 {
      response.responses = [await store(0, items[0])]
      return response
    }
    var entries = [BatchUpdateBlobsResponse.Response?](repeating: nil, count: items.count)
    await withTaskGroup(of: (Int, BatchUpdateBlobsResponse.Response).self) { group in
      var next = 0
      func startOne() {
        let i = next
        next += 1
        group.addTask { (i, await store(i, items[i])) }
      }
      while next < min(16, items.count) { startOne() }
      while let (i, entry) = await group.next() {
        entries[i] = entry
        if next < items.count { startOne() }
      }
    }
    response.responses = entries.compactMap { $0 }
    return response
  }

  static func batchRead(
    _ table: InstanceTable, _ request: BatchReadBlobsRequest
  ) async throws -> BatchReadBlobsResponse {
    try DigestCheck.checkFunction(request.digestFunction)
    let cas = try table.cas(request.instanceName)
    var digests: [BlobDigest] = []
    for (i, d) in request.digests.enumerated() {
      digests.append(try DigestCheck.validate(d, "digests[\(i)]"))
    }
    let total = digests.reduce(Int64(0)) { $0 + $1.sizeBytes }
    guard total <= table.maxBatchTotalBytes else {
      throw RPCError.invalidArgument(
        "batch asks for \(total) bytes, over the limit of \(table.maxBatchTotalBytes)")
    }
    let zstdAccepted = request.acceptableCompressors.contains(.zstd)
    var response = BatchReadBlobsResponse()
    for (digest, original) in zip(digests, request.digests) {
      var entry = BatchReadBlobsResponse.Response()
      entry.digest = original
      if digest.isEmpty {
        entry.status = .ok
      } else if zstdAccepted, digest.sizeBytes >= minCompressedBatchBlob,
        let frame = try await storedFrame(cas, digest)
      {
        // What a `compression: zstd` store keeps, as it is: nothing compressed here.
        CompressionMetrics.downloadUncompressed.increment(by: digest.sizeBytes)
        CompressionMetrics.downloadCompressed.increment(by: Int64(frame.count))
        entry.data = frame
        entry.compressor = .zstd
        entry.status = .ok
      } else if let data = try await cas.readAll(digest, maxBytes: Int(digest.sizeBytes)) {
        entry.data = data
        entry.status = .ok
        if zstdAccepted && data.count >= minCompressedBatchBlob {
          // Level 1, and only when it gains: IDENTITY is always acceptable to the client.
          let compressed = try ZstdCompressor.compress(data, level: 1)
          if compressed.count < data.count {
            CompressionMetrics.downloadUncompressed.increment(by: Int64(data.count))
            CompressionMetrics.downloadCompressed.increment(by: Int64(compressed.count))
            entry.data = compressed
            entry.compressor = .zstd
          }
        }
      } else {
        entry.status = RPCError(.notFound, "blob \(digest) not found").statusMessage
      }
      response.responses.append(entry)
    }
    return response
  }

  /// The zstd frame the store keeps for `digest` (`BlobStore.readCompressed`) when it is
  /// smaller than the blob; nil otherwise (then the blob is read and compressed as usual),
  /// reading no further than the blob's size.
  static func storedFrame(_ cas: any BlobStore, _ digest: BlobDigest) async throws -> [UInt8]? {
    struct NotSmaller: Error {}
    var frame: [UInt8] = []
    do {
      let found = try await cas.readCompressed(digest) { chunk in
        guard frame.count + chunk.count < digest.sizeBytes else { throw NotSmaller() }
        frame += chunk
      }
      return found ? frame : nil
    } catch is NotSmaller {
      return nil
    }
  }

  /// Breadth-first walk from the root. The page token is the number of directories already
  /// returned, so paging needs no server state; directories missing from the CAS are skipped.
  static func getTree(
    _ table: InstanceTable, _ request: GetTreeRequest, _ writer: RPCMessageWriter
  ) async throws {
    try DigestCheck.checkFunction(request.digestFunction)
    let cas = try table.cas(request.instanceName)
    let root = try DigestCheck.validate(request.rootDigest, "root_digest")
    guard request.pageSize >= 0 else { throw RPCError.invalidArgument("page_size is negative") }
    var skip = 0
    if !request.pageToken.isEmpty {
      guard let n = Int(request.pageToken), n >= 0 else {
        throw RPCError.invalidArgument("page_token \"\(request.pageToken)\" is not one this server issued")
      }
      skip = n
    }
    let pageSize = request.pageSize == 0 ? maxTreePage : min(Int(request.pageSize), maxTreePage)
    let maxDirectoryBytes = table.maxMessageBytes

    guard let rootBytes = try await cas.readAll(root, maxBytes: maxDirectoryBytes) else {
      throw RPCError(.notFound, "root directory \(root) not found")
    }
    var queue: [(BlobDigest, [UInt8])] = [(root, rootBytes)]
    var seen: Set<BlobDigest> = [root]
    var emitted = 0
    var page = GetTreeResponse()
    var pageBytes = 0
    var head = 0
    while head < queue.count {
      let (_, bytes) = queue[head]
      head += 1
      let directory = try Directory(serializedBytes: bytes)
      for child in directory.directories {
        guard let d = child.digest?.validated, !seen.contains(d) else { continue }
        seen.insert(d)
        if let childBytes = try await cas.readAll(d, maxBytes: maxDirectoryBytes) {
          queue.append((d, childBytes))
        }
      }
      emitted += 1
      guard emitted > skip else { continue }
      // Keep each response well under the message limit as well as under the page size.
      if page.directories.count == pageSize || pageBytes + bytes.count > maxDirectoryBytes / 2 {
        page.nextPageToken = String(emitted - 1)
        try await writer.write(page.serializedBytes())
        return
      }
      page.directories.append(directory)
      pageBytes += bytes.count
    }
    try await writer.write(page.serializedBytes())
  }
}
