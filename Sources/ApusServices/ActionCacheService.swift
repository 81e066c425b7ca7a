import ApusProto
import ApusRPC
import ApusStore

/// `build.bazel.remote.execution.v2.ActionCache`. Results are stored exactly as the client
/// encoded them, so fields this server does not know survive the round trip.
struct ActionCacheService {
  let table: InstanceTable
  static let prefix = "/build.bazel.remote.execution.v2.ActionCache/"

  func register(on router: inout RPCRouter) {
    let table = self.table
    router.unary(
      Self.prefix + "GetActionResult", DecodedGetActionResultRequest.self, auth: table.authorizer,
      instance: { $0.instanceName },
      now: { request, _ in
        let (entry, ac, key) = try Self.lookup(table, request)
        switch try ac.readAllNow(key, maxBytes: table.maxMessageBytes) {
        case .wouldWait: return nil
        case .absent: return try Self.answer(nil, entry, key)
        case .found(let bytes): return try Self.answer(bytes, entry, key)
        }
      }
    ) { request, _ in
      let (entry, ac, key) = try Self.lookup(table, request)
      return try Self.answer(
        try await ac.readAll(key, maxBytes: table.maxMessageBytes), entry, key)
    }
    router.unaryWithBytes(
      Self.prefix + "UpdateActionResult", UpdateActionResultRequest.self, auth: table.authorizer,
      instance: { $0.instanceName }
    ) { request, raw, _ in
      try DigestCheck.checkFunction(request.digestFunction)
      let instance = try table.instance(request.instanceName)
      let ac = try table.actionCache(request.instanceName)
      guard instance.actionCacheUpdates else {
        throw RPCError(.permissionDenied, "instance \"\(request.instanceName)\" does not accept action cache updates")
      }
      let key = try DigestCheck.validate(request.actionDigest, "action_digest")
      guard let result = request.actionResult else {
        throw RPCError.invalidArgument("action_result is missing")
      }
      try Self.validate(result)
      let stored = try Self.rawField(3, of: raw)
      try await ac.writeAll(key, stored)
      return stored
    }
  }

  /// GetActionResult's checks: the instance, its action cache and the key the request names.
  static func lookup(
    _ table: InstanceTable, _ request: DecodedGetActionResultRequest
  ) throws -> (InstanceTable.Entry, any BlobStore, BlobDigest) {
    try DigestCheck.checkFunction(request.digestFunction)
    let entry = try table.entry(request.instanceName)
    let ac = try table.actionCache(of: entry)
    return (entry, ac, try DigestCheck.validate(request.actionDigest, "action_digest"))
  }

  /// GetActionResult's answer for what the store holds under `key`, counted as a lookup.
  static func answer(
    _ bytes: [UInt8]?, _ entry: InstanceTable.Entry, _ key: BlobDigest
  ) throws -> [UInt8] {
    entry.lookups.counts.record(hit: bytes != nil)
    guard let bytes else { throw RPCError(.notFound, "no action result for \(key)") }
    return bytes
  }

  /// Every digest an ActionResult names must be well-formed, or clients would later fail.
  static func validate(_ result: ActionResult) throws {
    for (i, f) in result.outputFiles.enumerated() {
      _ = try DigestCheck.validate(f.digest, "action_result.output_files[\(i)].digest")
    }
    for (i, d) in result.outputDirectories.enumerated() {
      _ = try DigestCheck.validate(d.treeDigest, "action_result.output_directories[\(i)].tree_digest")
    }
    if let d = result.stdoutDigest { _ = try DigestCheck.validate(d, "action_result.stdout_digest") }
    if let d = result.stderrDigest { _ = try DigestCheck.validate(d, "action_result.stderr_digest") }
  }

  /// The bytes of the last occurrence of a length-delimited field, as received.
  static func rawField(_ number: Int, of message: [UInt8]) throws -> [UInt8] {
    var reader = ProtoReader(message)
    var found: [UInt8] = []
    while let tag = try reader.nextTag() {
      if tag.number == number && tag.wireType == .lengthDelimited {
        found = try reader.bytes(tag)
      } else {
        try reader.skip(tag)
      }
    }
    return found
  }
}
