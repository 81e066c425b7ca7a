import ApusProto
import ApusRPC

/// Another REAPI server (another Apus, or any REAPI CAS) as a store, over gRPC.
///
/// As a CAS: FindMissingBlobs, ByteStream Read with offset and limit, and uploads by
/// BatchUpdateBlobs (small) or ByteStream Write (large). As an action cache:
/// GetActionResult / UpdateActionResult, with the ActionResult bytes passed through.
public struct GRPCStore: BlobStore {
  public enum Role: Sendable { case cas, actionCache }

  let client: GRPCClient
  let instanceName: String
  let role: Role
  /// Each call's deadline (the caller's, if sooner); nil: only the caller's.
  let timeout: Duration?
  /// nil for the worker's own CAS client, which has nowhere else to go.
  let breaker: CircuitBreaker?
  /// Blobs up to this size are uploaded with BatchUpdateBlobs.
  static let batchThreshold: Int64 = 1 << 20
  static let findMissingBatch = 10_000

  public init(
    client: GRPCClient, instanceName: String, role: Role, timeout: Duration? = nil, breaker: CircuitBreaker? = nil
  ) {
    self.client = client
    self.instanceName = instanceName
    self.role = role
    self.timeout = timeout
    self.breaker = breaker
  }

  /// Runs one call through the circuit breaker: refused at once while it is open; an
  /// UNAVAILABLE, a timeout of our own or a transport error counts as a failure, any other
  /// answer (NOT_FOUND included) as a success.
  private func guarded<T>(_ body: (Duration?) async throws -> T) async throws -> T {
    try breaker?.admit()
    let timeout = CallDeadline.bounded(self.timeout)
    do {
      let result = try await body(timeout)
      breaker?.record(.success)
      return result
    } catch let error as RPCError {
      switch error.code {
      case .deadlineExceeded where (CallDeadline.remaining.map { $0 <= .zero } ?? false):
        breaker?.record(.unknown)
      case .unavailable, .deadlineExceeded, .unknown, .internal:
        breaker?.record(.failure, detail: "\(error)")
      default:
        breaker?.record(.success)
      }
      throw error
    } catch {
      breaker?.record(Task.isCancelled ? .unknown : .success)
      throw error
    }
  }

  /// The breaker's probe: GetCapabilities, answered by any live REAPI server.
  public func probe(timeout: Duration = .seconds(5)) async throws {
    var request = GetCapabilitiesRequest()
    request.instanceName = instanceName
    do {
      _ = try await client.unary(Self.capabilities, request.serializedBytes(), timeout: timeout)
    } catch let error as RPCError where ![.unavailable, .deadlineExceeded].contains(error.code) {
      return  // it answered
    }
  }

  static let cas = "/build.bazel.remote.execution.v2.ContentAddressableStorage/"
  static let ac = "/build.bazel.remote.execution.v2.ActionCache/"
  static let bytestream = "/google.bytestream.ByteStream/"
  static let capabilities = "/build.bazel.remote.execution.v2.Capabilities/GetCapabilities"

  private var prefix: String { instanceName.isEmpty ? "" : instanceName + "/" }

  public func findMissing(_ digests: [BlobDigest]) async throws -> [BlobDigest] {
    switch role {
    case .cas:
      var missing: [BlobDigest] = []
      var start = 0
      while start < digests.count {
        let batch = digests[start..<min(start + Self.findMissingBatch, digests.count)]
        var request = FindMissingBlobsRequest()
        request.instanceName = instanceName
        request.blobDigests = batch.map(\.proto)
        let response = try FindMissingBlobsResponse(
          serializedBytes: try await guarded {
            try await client.unary(Self.cas + "FindMissingBlobs", request.serializedBytes(), timeout: $0)
          })
        let set = Set(response.missingBlobDigests.compactMap(\.validated))
        missing += batch.filter(set.contains)
        start += Self.findMissingBatch
      }
      return missing
    case .actionCache:
      var missing: [BlobDigest] = []
      for d in digests where try await actionResult(d) == nil { missing.append(d) }
      return missing
    }
  }

  private func actionResult(_ digest: BlobDigest) async throws -> [UInt8]? {
    var request = GetActionResultRequest()
    request.instanceName = instanceName
    request.actionDigest = digest.proto
    do {
      return try await guarded {
        try await client.unary(Self.ac + "GetActionResult", request.serializedBytes(), timeout: $0)
      }
    } catch let error as RPCError where error.code == .notFound {
      return nil
    }
  }

  public func read(
    _ digest: BlobDigest, offset: Int64, limit: Int64?,
    into sink: (ArraySlice<UInt8>) async throws -> Void
  ) async throws -> Bool {
    if role == .actionCache {
      guard let bytes = try await actionResult(digest) else { return false }
      let start = Int(min(max(offset, 0), Int64(bytes.count)))
      let end = limit.map { min(bytes.count, start + Int(min($0, Int64(bytes.count)))) } ?? bytes.count
      try await sink(bytes[start..<end])
      return true
    }
    var request = ReadRequest()
    request.resourceName = "\(prefix)blobs/\(digest.hashHex)/\(digest.sizeBytes)"
    request.readOffset = offset
    request.readLimit = limit ?? 0
    do {
      try await guarded { timeout in
        let stream = try await client.serverStreaming(
          Self.bytestream + "Read", request.serializedBytes(), timeout: timeout)
        for try await message in stream {
          try await sink(try ReadResponse(serializedBytes: message).data[...])
        }
      }
      return true
    } catch let error as RPCError where error.code == .notFound {
      return false
    }
  }

  public func write<Chunks: AsyncSequence<ArraySlice<UInt8>, any Error>>(
    _ digest: BlobDigest, from chunks: Chunks
  ) async throws {
    switch role {
    case .actionCache:
      var value: [UInt8] = []
      for try await chunk in chunks { value += chunk }
      // UpdateActionResultRequest with the result's bytes as given (unknown fields kept).
      var writer = ProtoWriter()
      writer.string(1, instanceName)
      writer.message(2, digest.proto)
      writer.writeTag(3, .lengthDelimited)
      writer.writeVarint(UInt64(value.count))
      var bytes = writer.bytes
      bytes += value
      _ = try await guarded { try await client.unary(Self.ac + "UpdateActionResult", bytes, timeout: $0) }
    case .cas where digest.sizeBytes <= Self.batchThreshold:
      var item = BatchUpdateBlobsRequest.Request()
      item.digest = digest.proto
      for try await chunk in chunks { item.data += chunk }
      var request = BatchUpdateBlobsRequest()
      request.instanceName = instanceName
      request.requests = [item]
      let response = try BatchUpdateBlobsResponse(
        serializedBytes: try await guarded {
          try await client.unary(Self.cas + "BatchUpdateBlobs", request.serializedBytes(), timeout: $0)
        })
      if let status = response.responses.first?.status, status.code != 0 {
        throw RPCError(RPCStatusCode(rawValue: status.code), status.message)
      }
    case .cas:
      let response = try await guarded { timeout in
        let call = try await client.call(Self.bytestream + "Write", timeout: timeout)
        let name = "\(prefix)uploads/\(UInt64.random(in: 0...UInt64.max))/blobs/\(digest.hashHex)/\(digest.sizeBytes)"
        var offset: Int64 = 0
        do {
          for try await chunk in chunks where !chunk.isEmpty {
            var request = WriteRequest()
            request.resourceName = offset == 0 ? name : ""
            request.writeOffset = offset
            request.data = chunk
            offset += Int64(chunk.count)
            try await call.requests.write(request.serializedBytes())
          }
          var last = WriteRequest()
          last.resourceName = offset == 0 ? name : ""
          last.writeOffset = offset
          last.finishWrite = true
          try await call.requests.write(last.serializedBytes())
        } catch let error as RPCError where [.cancelled, .unavailable].contains(error.code) {
          // The server may end the call early (the blob exists): its response below tells.
        } catch {
          call.cancelCall()
          throw error
        }
        call.finishRequests()
        return try WriteResponse(serializedBytes: try await call.responses.single())
      }
      guard response.committedSize == digest.sizeBytes else {
        throw StoreError(.dataLoss, "upload of \(digest) committed \(response.committedSize) bytes")
      }
    }
  }
}
