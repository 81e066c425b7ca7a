import ApusConfig
import ApusProto
import ApusRPC
import NIOHTTP1

/// `compression: zstd` on an `s3` store: objects are one zstd frame, marked by the user
/// metadata `x-amz-meta-apus-encoding: zstd` under the same key, so objects written before
/// (without the mark) stay readable and FindMissingBlobs is still one HEAD per blob.
extension S3Store {
  static let encodingHeader = "x-amz-meta-apus-encoding"

  /// The metadata that marks a compressed object, if `headers` (of a GET) carry it; a copy
  /// of the object must send it again.
  static func compressionMetadata(_ headers: HTTPHeaders) -> [(String, String)] {
    headers.first(name: encodingHeader) == "zstd" ? [(encodingHeader, "zstd")] : []
  }

  /// Uploads `chunks` compressed as they arrive (the multipart threshold and parts count
  /// compressed bytes).
  func putCompressed<Chunks: AsyncSequence<ArraySlice<UInt8>, any Error>>(
    _ digest: BlobDigest, from chunks: Chunks
  ) async throws {
    try await put(
      digest,
      from: ZstdCompressingChunks(
        base: chunks, level: Int32(compression.level),
        windowLog: StoredZstd.windowLog(forSize: digest.sizeBytes, level: compression.level)),
      metadata: [(Self.encodingHeader, "zstd")])
  }

  /// Thrown by a sink to stop reading a body once the range is delivered.
  private struct RangeDelivered: Error {}

  /// Streams `[offset, offset + limit)` of the content of a GET of the whole object:
  /// decoded when the object is compressed, trimmed when it is not.
  func readDecoding(
    _ digest: BlobDigest, key: String, response: S3Client.Response, offset: Int64, limit: Int64?,
    into sink: (ArraySlice<UInt8>) async throws -> Void
  ) async throws {
    let what = "s3 GET \(key)"
    let start = max(offset, 0)
    let end = limit.map { start + min(max($0, 0), Int64.max - start) } ?? Int64.max
    if Self.compressionMetadata(response.headers).isEmpty {
      var position: Int64 = 0
      do {
        try await client.stream(response, what) { chunk in
          let low = max(start, position), high = min(end, position + Int64(chunk.count))
          if low < high { try await sink(chunk[(chunk.startIndex + Int(low - position))...].prefix(Int(high - low))) }
          position += Int64(chunk.count)
          if position >= end { throw RangeDelivered() }
        }
      } catch is RangeDelivered {}
      return
    }
    // The objects are the store's own, so the decoder is bounded by the range, not a size.
    var decoder: ZstdRangeDecoder
    do throws(RPCError) {
      decoder = try ZstdRangeDecoder(contentLimit: Int64(Int.max), start: start, end: end)
    } catch {
      throw StoreError(error.code, "\(what): \(error.message)")
    }
    do {
      try await client.stream(response, what) { chunk in
        let parts: [ArraySlice<UInt8>]
        do throws(RPCError) {
          parts = try decoder.push(chunk)
        } catch {
          throw StoreError(.dataLoss, "\(what): the stored object does not decompress (\(error.message))")
        }
        for part in parts { try await sink(part) }
        if decoder.isDone { throw RangeDelivered() }
      }
      do throws(RPCError) {
        try decoder.finish()
      } catch {
        throw StoreError(.dataLoss, "\(what): the stored object is cut short (\(error.message))")
      }
    } catch is RangeDelivered {}
  }

  /// The stored frame of a compressed object as it is. False when the store does not write
  /// compressed objects (no GET is spent), the object is absent, or it was stored as is.
  public func readCompressed(
    _ digest: BlobDigest, into sink: (ArraySlice<UInt8>) async throws -> Void
  ) async throws -> Bool {
    guard compression.algorithm == .zstd else { return false }
    let key = self.key(digest)
    let r = try await client.send(.GET, key: key, accept: { $0 == 200 || $0 == 404 })
    let metadata = Self.compressionMetadata(r.headers)
    // An uncompressed object's body is dropped unread: the caller reads it with `read`.
    guard r.status == 200, !metadata.isEmpty else { return false }
    try await client.stream(r, "s3 GET \(key)", into: sink)
    try? await refreshIfOld(key, r, metadata: metadata)
    return true
  }
}
