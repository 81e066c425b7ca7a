import ApusProto
import ApusRPC
import ApusStore
import Synchronization

/// `google.bytestream.ByteStream` over the CAS: streamed reads with offset and limit,
/// streamed verified writes, and write status for resuming clients; the same for REAPI's
/// `compressed-blobs/zstd` names, compressed or decompressed as the bytes stream (stores
/// only ever see uncompressed chunks).
///
/// Partial uploads are not kept: a failed Write leaves nothing, QueryWriteStatus reports
/// `committed_size` 0 for it, and the client restarts from offset 0.
struct ByteStreamService {
  let table: InstanceTable
  let uploads: UploadTable
  static let prefix = "/google.bytestream.ByteStream/"
  /// The one compressor of `compressed-blobs` names.
  static let zstd = "zstd"
  /// Largest data chunk per ReadResponse / handed to a store when compressing or inflating.
  static let chunkBytes = 1 << 20

  func register(on router: inout RPCRouter) {
    let table = self.table
    let uploads = self.uploads
    router.serverStreaming(
      Self.prefix + "Read", ReadRequest.self, auth: table.authorizer,
      instance: { (try? Self.resource($0.resourceName, .read))?.instanceName }
    ) { request, writer, _ in
      try await Self.read(table, request, writer)
    }
    router.clientStreaming(Self.prefix + "Write", auth: table.authorizer) { requests, responses, access in
      var response = WriteResponse()
      response.committedSize = try await Self.write(table, uploads, requests, access)
      try await responses.write(response.serializedBytes())
    }
    router.unary(
      Self.prefix + "QueryWriteStatus", QueryWriteStatusRequest.self, auth: table.authorizer,
      instance: { (try? Self.resource($0.resourceName, .write))?.instanceName }
    ) { request, _ in
      try await Self.queryWriteStatus(table, uploads, request).serializedBytes()
    }
  }

  static func resource(_ name: String, _ kind: ResourceName.Kind) throws -> ResourceName {
    switch ResourceName.parse(name, kind: kind) {
    case .success(let r):
      if let compressor = r.compressor, compressor != zstd {
        throw RPCError.invalidArgument(
          "compressed-blobs/\(compressor) is not supported; this server supports zstd")
      }
      if let function = r.digestFunction, function != "sha256" {
        throw RPCError.invalidArgument(
          "digest function \"\(function)\" in the resource name is not supported; only sha256 is")
      }
      return r
    case .failure(let e): throw RPCError.invalidArgument(e.description)
    }
  }

  static func read(
    _ table: InstanceTable, _ request: ReadRequest, _ writer: RPCMessageWriter
  ) async throws {
    let name = try resource(request.resourceName, .read)
    let cas = try table.cas(name.instanceName)
    let size = name.digest.sizeBytes
    guard request.readOffset >= 0, request.readOffset <= size else {
      throw RPCError(.outOfRange, "read_offset \(request.readOffset) is outside 0...\(size)")
    }
    guard request.readLimit >= 0 else {
      throw RPCError.invalidArgument("read_limit \(request.readLimit) is negative")
    }
    if name.compressor != nil {
      guard request.readLimit == 0 else {
        throw RPCError.invalidArgument(
          "read_limit must be 0 for compressed-blobs reads (REAPI), got \(request.readLimit)")
      }
      try await readCompressed(cas, name.digest, offset: request.readOffset, writer)
      return
    }
    if name.digest.isEmpty { return }
    let limit = request.readLimit == 0 ? nil : request.readLimit
    let found = try await cas.read(name.digest, offset: request.readOffset, limit: limit) { chunk in
      try await writer.write(parts: [ReadResponse.encodedHeader(dataCount: chunk.count)[...], chunk])
    }
    guard found else { throw RPCError(.notFound, "blob \(name.digest) not found") }
  }

  /// Streams the blob from `offset` as one zstd frame: from offset 0 the frame a store keeps
  /// (`BlobStore.readCompressed`), else compressed anew at level 1 (the fastest) as each
  /// store chunk arrives. Reading from
  /// the end, or the empty blob, gives a frame holding nothing.
  static func readCompressed(
    _ cas: any BlobStore, _ digest: BlobDigest, offset: Int64, _ writer: RPCMessageWriter
  ) async throws {
    // The data is a zstd frame: gRPC message compression of it would cost CPU for nothing.
    let writer = writer.uncompressed
    // A `compression: zstd` store hands out the frame it keeps: nothing is compressed here.
    if offset == 0, !digest.isEmpty {
      let stored = try await cas.readCompressed(digest) { chunk in
        CompressionMetrics.downloadCompressed.increment(by: Int64(chunk.count))
        try await writer.write(parts: [ReadResponse.encodedHeader(dataCount: chunk.count)[...], chunk])
      }
      if stored {
        CompressionMetrics.downloadUncompressed.increment(by: digest.sizeBytes)
        return
      }
    }
    let compressor = try ZstdCompressor(level: 1, pledgedSize: Int(digest.sizeBytes - offset))
    func send(_ data: [UInt8]) async throws {
      CompressionMetrics.downloadCompressed.increment(by: Int64(data.count))
      try await writer.write(parts: [ReadResponse.encodedHeader(dataCount: data.count)[...], data[...]])
    }
    if !digest.isEmpty {
      let found = try await cas.read(digest, offset: offset, limit: nil) { chunk in
        CompressionMetrics.downloadUncompressed.increment(by: Int64(chunk.count))
        compressor.push(chunk)
        while let out = try compressor.next(maxBytes: chunkBytes) { try await send(out) }
      }
      guard found else { throw RPCError(.notFound, "blob \(digest) not found") }
    }
    compressor.finish()
    while let out = try compressor.next(maxBytes: chunkBytes) { try await send(out) }
  }

  /// Returns the committed size: the digest's size, or for a compressed upload the
  /// compressed bytes received (what the client's offsets count), or −1 when the blob was
  /// already present (REAPI: a compressed upload cannot know the size to expect).
  static func write(
    _ table: InstanceTable, _ uploads: UploadTable, _ requests: RPCMessageStream,
    _ access: CallAccess
  ) async throws -> Int64 {
    var iterator = requests.makeAsyncIterator()
    guard let firstBytes = try await iterator.next() else {
      throw RPCError.invalidArgument("Write received no request")
    }
    let first = try WriteRequest(serializedBytes: firstBytes)
    guard !first.resourceName.isEmpty else {
      throw RPCError.invalidArgument("the first WriteRequest must carry resource_name")
    }
    let name = try resource(first.resourceName, .write)
    try access.check(instance: name.instanceName)
    let cas = try table.cas(name.instanceName)
    let size = name.digest.sizeBytes
    guard first.writeOffset == 0 else {
      throw RPCError.invalidArgument(
        "write_offset \(first.writeOffset): this server keeps no partial uploads; start at 0")
    }
    uploads.started(first.resourceName)
    // An existing blob ends the call at once, as REAPI allows.
    if try await exists(cas, name.digest) { return name.compressor == nil ? size : -1 }
    guard name.compressor != nil else {
      let chunks = WriteChunks(
        first: first, firstMessageBytes: firstBytes.count, rest: iterator,
        resourceName: first.resourceName, maxBytes: size)
      try await cas.write(name.digest, from: chunks)
      return size
    }
    // Compressed: offsets after the first (0) count compressed bytes, so WriteChunks' offset
    // rule is unchanged; the decoder bounds the compressed and the decompressed sizes.
    let decoder = try ZstdUploadDecoder(expectedSize: size)
    let chunks = WriteChunks(
      first: first, firstMessageBytes: firstBytes.count, rest: iterator,
      resourceName: first.resourceName, maxBytes: .max)
    try await cas.write(name.digest, from: ZstdUploadChunks(source: chunks, decoder: decoder))
    return decoder.compressedBytes
  }

  static func exists(_ cas: any BlobStore, _ digest: BlobDigest) async throws -> Bool {
    if digest.isEmpty { return true }
    return try await cas.contains(digest)
  }

  static func queryWriteStatus(
    _ table: InstanceTable, _ uploads: UploadTable, _ request: QueryWriteStatusRequest
  ) async throws -> QueryWriteStatusResponse {
    let name = try resource(request.resourceName, .write)
    let cas = try table.cas(name.instanceName)
    var response = QueryWriteStatusResponse()
    if try await exists(cas, name.digest) {
      response.committedSize = name.digest.sizeBytes
      response.complete = true
      return response
    }
    guard uploads.isKnown(request.resourceName) else {
      throw RPCError(.notFound, "no upload named \"\(request.resourceName)\"")
    }
    return response
  }
}

/// The data of a Write call as chunks, checking offsets and `finish_write` on the way.
/// `maxBytes` is the digest's size (compressed uploads leave the bound to their decoder).
///
/// Each chunk is a slice of its received message, not a copy (see ``kept(_:ofMessageBytes:)``).
struct WriteChunks: AsyncSequence {
  typealias Element = ArraySlice<UInt8>
  let first: WriteRequest
  let firstMessageBytes: Int
  let rest: RPCMessageStream.AsyncIterator
  let resourceName: String
  let maxBytes: Int64

  /// The data as a store may keep it: the slice itself when the data is nearly all of its
  /// message, else a copy, so a message that is mostly something else (a long resource
  /// name) is not kept alive for a few bytes of data. A store then holds at most 9/8 of
  /// what it counts.
  static func kept(_ data: ArraySlice<UInt8>, ofMessageBytes bytes: Int) -> ArraySlice<UInt8> {
    bytes - data.count <= data.count / 8 ? data : Array(data)[...]
  }

  struct AsyncIterator: AsyncIteratorProtocol {
    /// The first request, decoded by the caller, and the size of its message.
    var pending: (request: WriteRequest, messageBytes: Int)?
    var rest: RPCMessageStream.AsyncIterator
    let resourceName: String
    let maxBytes: Int64
    var offset: Int64 = 0
    var finished = false

    mutating func next() async throws -> ArraySlice<UInt8>? {
      while true {
        if finished {
          guard try await rest.next() == nil else {
            throw RPCError.invalidArgument("WriteRequest received after finish_write")
          }
          return nil
        }
        let request: WriteRequest
        let messageBytes: Int
        if let p = pending {
          (request, messageBytes) = p
          pending = nil
        } else {
          guard let bytes = try await rest.next() else {
            throw RPCError.invalidArgument(
              "the client ended the Write without finish_write after \(offset) bytes")
          }
          request = try WriteRequest(serializedBytes: bytes)
          messageBytes = bytes.count
          guard request.resourceName.isEmpty || request.resourceName == resourceName else {
            throw RPCError.invalidArgument("resource_name changed during the Write")
          }
        }
        guard request.writeOffset == offset else {
          throw RPCError.invalidArgument(
            "write_offset \(request.writeOffset) does not continue at \(offset)")
        }
        offset += Int64(request.data.count)
        guard offset <= maxBytes else {
          throw RPCError.invalidArgument("Write sent more than the \(maxBytes) bytes of the digest")
        }
        finished = request.finishWrite
        if !request.data.isEmpty {
          return WriteChunks.kept(request.data, ofMessageBytes: messageBytes)
        }
      }
    }
  }

  func makeAsyncIterator() -> AsyncIterator {
    AsyncIterator(
      pending: (first, firstMessageBytes), rest: rest, resourceName: resourceName,
      maxBytes: maxBytes)
  }
}

/// A compressed Write's data, decompressed: what the store is given. Throws (so nothing is
/// stored) on bad zstd data, more output than the digest's size, or a short stream.
struct ZstdUploadChunks: AsyncSequence {
  typealias Element = ArraySlice<UInt8>
  let source: WriteChunks
  let decoder: ZstdUploadDecoder

  struct AsyncIterator: AsyncIteratorProtocol {
    var source: WriteChunks.AsyncIterator
    let decoder: ZstdUploadDecoder
    var ended = false

    mutating func next() async throws -> ArraySlice<UInt8>? {
      while true {
        if let out = try decoder.next(maxBytes: ByteStreamService.chunkBytes) {
          CompressionMetrics.uploadUncompressed.increment(by: Int64(out.count))
          return out[...]
        }
        if ended { return nil }
        guard let compressed = try await source.next() else {
          try decoder.finish()
          ended = true
          return nil
        }
        CompressionMetrics.uploadCompressed.increment(by: Int64(compressed.count))
        try decoder.push(compressed)
      }
    }
  }

  func makeAsyncIterator() -> AsyncIterator {
    AsyncIterator(source: source.makeAsyncIterator(), decoder: decoder)
  }
}

/// Upload names seen recently, so QueryWriteStatus can tell "unknown" from "restart at 0".
/// Bounded (the oldest names are forgotten): 10,000 is far more than uploads in flight.
final class UploadTable: Sendable {
  private struct State {
    var known: Set<String> = []
    var order: [String] = []
    var head = 0
  }
  private let state = Mutex(State())
  private let capacity: Int

  init(capacity: Int = 10_000) { self.capacity = capacity }

  func started(_ name: String) {
    state.withLock { s in
      guard s.known.insert(name).inserted else { return }
      s.order.append(name)
      if s.known.count > capacity {
        s.known.remove(s.order[s.head])
        s.head += 1
        if s.head > capacity {
          s.order.removeFirst(s.head)
          s.head = 0
        }
      }
    }
  }

  func isKnown(_ name: String) -> Bool { state.withLock { $0.known.contains(name) } }
}
