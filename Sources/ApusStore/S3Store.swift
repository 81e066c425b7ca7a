import ApusConfig
import ApusProto
import AsyncHTTPClient
import Logging
import NIOCore
import NIOHTTP1

#if canImport(Glibc)
  import Glibc
#endif

/// Blobs as objects in an S3-compatible bucket: `{prefix}{hash}-{size}`.
///
/// `has` is HEAD; reads are ranged GETs streamed to the caller; writes are one PUT up to
/// `multipartThreshold` bytes, else a multipart upload whose parts go up as the bytes
/// arrive (one part buffered at a time). A failed multipart upload is aborted, so nothing
/// is ever visible under the key unless complete. With `maxSeconds`, ``sweep()`` deletes
/// objects not written for that long, and a read of an object past half that age
/// refreshes it (a copy onto itself), so what is in use stays.
public final class S3Store: BlobStore {
  let client: S3Client
  let prefix: String
  let multipartThreshold: Int
  let partBytes: Int
  let maxSeconds: Int64?
  let logger: Logger
  /// How new objects are written (S3Store+Compression.swift).
  let compression: StoreCompression

  public init(
    location: S3Location, breaker: CircuitBreaker, prefix: String, multipartThreshold: Int, partBytes: Int,
    maxSeconds: Int64?, compression: StoreCompression = .none, logger: Logger = Logger(label: "apus.s3")
  ) throws {
    client = try S3Client(location: location, breaker: breaker)
    self.prefix = prefix
    self.multipartThreshold = multipartThreshold
    self.partBytes = max(partBytes, 5 << 20)
    self.maxSeconds = maxSeconds
    self.logger = logger
    self.compression = compression
  }

  func key(_ d: BlobDigest) -> String { "\(prefix)\(d.hashHex)-\(d.sizeBytes)" }

  public func findMissing(_ digests: [BlobDigest]) async throws -> [BlobDigest] {
    try await withThrowingTaskGroup(of: (Int, Bool).self) { group in
      var present = [Bool](repeating: false, count: digests.count)
      var next = 0
      func addOne() {
        let i = next, key = self.key(digests[i])
        next += 1
        group.addTask {
          let r = try await self.client.send(.HEAD, key: key, accept: { $0 == 200 || $0 == 404 })
          return (i, r.status == 200)
        }
      }
      for _ in 0..<min(16, digests.count) { addOne() }
      while let (i, found) = try await group.next() {
        present[i] = found
        if next < digests.count { addOne() }
      }
      return digests.indices.filter { !present[$0] }.map { digests[$0] }
    }
  }

  public func read(
    _ digest: BlobDigest, offset: Int64, limit: Int64?,
    into sink: (ArraySlice<UInt8>) async throws -> Void
  ) async throws -> Bool {
    var headers: [(String, String)] = []
    // A compressed object decodes from its start, so a store that writes them asks for the
    // whole object; an uncompressed one found that way is trimmed as it streams.
    let ranged = (offset > 0 || limit != nil) && compression.algorithm == .none
    if ranged {
      let end = limit.map { " \(offset + $0 - 1)" } ?? ""
      headers.append(("range", "bytes=\(offset)-\(end.trimmingLeadingSpace)"))
    }
    let key = self.key(digest)
    var r = try await client.send(.GET, key: key, headers: headers, accept: { [200, 206, 404, 416].contains($0) })
    // Written compressed before the store was switched to `none`: decode from the start. A
    // range past the object's end before the content's end says so too (416 has no metadata).
    if ranged,
      r.status == 206 && !Self.compressionMetadata(r.headers).isEmpty
        || r.status == 416 && offset < digest.sizeBytes
    {
      r = try await client.send(.GET, key: key, accept: { $0 == 200 || $0 == 404 })
    }
    switch r.status {
    case 404: return false
    case 416: return true  // offset at the end: nothing to send
    default: break
    }
    let metadata = Self.compressionMetadata(r.headers)
    if !metadata.isEmpty || r.status == 200 && (offset > 0 || limit != nil) {
      try await readDecoding(digest, key: key, response: r, offset: offset, limit: limit, into: sink)
    } else {
      try await client.stream(r, "s3 GET \(key)", into: sink)
    }
    try? await refreshIfOld(key, r, metadata: metadata)
    return true
  }

  /// With `maxSeconds`, refreshes an object read past half that age.
  func refreshIfOld(_ key: String, _ r: S3Client.Response, metadata: [(String, String)]) async throws {
    if let maxSeconds, let lastModified = r.headers.first(name: "last-modified"),
      let written = HTTPDates.rfc1123(lastModified), Int64(time(nil)) - written > maxSeconds / 2
    {
      try await refresh(key, metadata: metadata)
    }
  }

  /// Copies the object onto itself, which resets its Last-Modified. REPLACE drops the
  /// object's metadata unless given again: `metadata` says whether it is compressed.
  func refresh(_ key: String, metadata: [(String, String)] = []) async throws {
    _ = try await client.send(
      .PUT, key: key,
      headers: [
        ("x-amz-copy-source", "/\(client.location.bucket)/\(key)"), ("x-amz-metadata-directive", "REPLACE"),
      ] + metadata)
  }

  public func write<Chunks: AsyncSequence<ArraySlice<UInt8>, any Error>>(
    _ digest: BlobDigest, from chunks: Chunks
  ) async throws {
    guard compression.algorithm == .zstd else { return try await put(digest, from: chunks, metadata: []) }
    try await putCompressed(digest, from: chunks)
  }

  /// One PUT or a multipart upload of `chunks` as the object of `digest`, with `metadata`.
  func put<Chunks: AsyncSequence<ArraySlice<UInt8>, any Error>>(
    _ digest: BlobDigest, from chunks: Chunks, metadata: [(String, String)]
  ) async throws {
    let key = self.key(digest)
    var buffer: [UInt8] = []
    var iterator = chunks.makeAsyncIterator()
    // Read up to the threshold: small blobs are one PUT.
    while buffer.count <= multipartThreshold, let chunk = try await iterator.next() { buffer += chunk }
    if buffer.count <= multipartThreshold {
      _ = try await client.send(.PUT, key: key, headers: metadata, body: buffer)
      return
    }
    let created = try await client.send(.POST, key: key, query: [("uploads", "")], headers: metadata)
    let text = String(buffer: try await created.body.collect(upTo: 1 << 20))
    guard let uploadID = xmlValues("UploadId", in: text).first else {
      throw StoreError(.internal, "s3 POST \(key)?uploads: no UploadId in the answer")
    }
    do {
      var etags: [String] = []
      func upload(_ part: [UInt8]) async throws {
        let r = try await client.send(
          .PUT, key: key, query: [("partNumber", "\(etags.count + 1)"), ("uploadId", uploadID)], body: part)
        guard let etag = r.headers.first(name: "etag") else {
          throw StoreError(.internal, "s3 PUT part \(etags.count + 1) of \(key): no ETag")
        }
        etags.append(etag)
      }
      while true {
        while buffer.count < partBytes, let chunk = try await iterator.next() { buffer += chunk }
        if buffer.count < partBytes { break }
        let part = Array(buffer[0..<partBytes])
        buffer.removeFirst(partBytes)
        try await upload(part)
      }
      if !buffer.isEmpty || etags.isEmpty { try await upload(buffer) }
      let xml =
        "<CompleteMultipartUpload>"
        + etags.enumerated().map { "<Part><PartNumber>\($0.offset + 1)</PartNumber><ETag>\($0.element)</ETag></Part>" }
        .joined() + "</CompleteMultipartUpload>"
      let done = try await client.send(.POST, key: key, query: [("uploadId", uploadID)], body: Array(xml.utf8))
      // S3 may answer 200 with an error document for CompleteMultipartUpload.
      let answer = String(buffer: try await done.body.collect(upTo: 1 << 20))
      if let code = S3Client.errorCode(answer) {
        throw StoreError(.unavailable, "s3 POST \(key)?uploadId: \(code)")
      }
    } catch {
      _ = try? await client.send(.DELETE, key: key, query: [("uploadId", uploadID)], accept: { _ in true })
      throw error
    }
  }

  /// One request that bypasses the circuit breaker and succeeds if the endpoint answers at
  /// all (HEAD of the bucket; any status, even 404, is an answer).
  /// Returns the answer's status.
  @discardableResult
  public func probe() async throws -> UInt {
    try await client.send(.HEAD, key: "", accept: { _ in true }, probe: true).status
  }

  /// Checks once, at start, that the bucket answers; if not, opens the circuit breaker so
  /// clients are served from the other tiers at once, and says so.
  public func checkReachable() async {
    let name = client.location.displayName
    do {
      let status = try await probe()
      if status == 200 {
        logger.info("\(name) is reachable")
      } else {
        logger.warning("\(name) answers HEAD of the bucket with \(status): check the bucket name and credentials")
      }
    } catch {
      logger.warning("\(name) is unreachable at start; serving from the other tiers until it answers: \(error)")
      client.breaker.trip(detail: "\(error)")
    }
  }

  /// Deletes objects older than `maxSeconds`, at most `limit` per call; returns how many.
  @discardableResult
  public func sweep(limit: Int = 10_000) async throws -> Int {
    guard let maxSeconds else { return 0 }
    let cutoff = Int64(time(nil)) - maxSeconds
    var deleted = 0
    var token: String?
    repeat {
      var query = [("list-type", "2"), ("prefix", prefix), ("max-keys", "1000")]
      if let token { query.append(("continuation-token", token)) }
      let r = try await client.send(.GET, key: "", query: query)
      let xml = String(buffer: try await r.body.collect(upTo: 16 << 20))
      let keys = xmlValues("Key", in: xml), dates = xmlValues("LastModified", in: xml)
      for (key, date) in zip(keys, dates) where deleted < limit {
        guard let written = HTTPDates.iso8601(date), written < cutoff else { continue }
        _ = try await client.send(.DELETE, key: key, accept: { $0 == 204 || $0 == 200 || $0 == 404 })
        deleted += 1
      }
      token = xmlValues("IsTruncated", in: xml).first == "true" ? xmlValues("NextContinuationToken", in: xml).first : nil
    } while token != nil && deleted < limit
    if deleted > 0 { logger.info("s3 expiry sweep", metadata: ["deleted": "\(deleted)", "prefix": "\(prefix)"]) }
    return deleted
  }

  /// Shuts the HTTP client down, closing its pooled connections; later requests fail.
  public func close() async {
    try? await client.http.shutdown()
  }
}

extension String {
  fileprivate var trimmingLeadingSpace: String { hasPrefix(" ") ? String(dropFirst()) : self }
}
