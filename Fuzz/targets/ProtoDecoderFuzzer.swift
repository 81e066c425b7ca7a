// libFuzzer target: every REAPI message decoder on arbitrary bytes. Compiled together with
// Sources/ApusProto (see Fuzz/run.sh). Besides not crashing, a decoded message must survive
// re-encoding: decode(encode(decode(x))) == decode(x).

func check<M: ProtoMessage>(_ type: M.Type, _ bytes: [UInt8]) {
  guard let message = try? M(serializedBytes: bytes) else { return }
  let again = message.serializedBytes()
  guard let back = try? M(serializedBytes: again), back == message else {
    fatalError("\(M.self) does not round-trip")
  }
}

/// The server's direct decoders accept and reject exactly what the generated ones do, with
/// the same errors, and agree on every digest.
func checkDecoded(_ bytes: [UInt8]) {
  switch (Result { try FindMissingBlobsRequest(serializedBytes: bytes) },
          Result { try DecodedFindMissingBlobsRequest(serializedBytes: bytes) }) {
  case (.success(let plain), .success(let direct)):
    let validated = plain.blobDigests.map(\.validated)
    let bad = validated.firstIndex(of: nil)
    guard direct.instanceName == plain.instanceName, direct.digestFunction == plain.digestFunction,
      direct.digests == validated[..<(bad ?? validated.count)].compactMap({ $0 }),
      direct.firstInvalid?.index == bad, direct.firstInvalid?.digest == bad.map({ plain.blobDigests[$0] })
    else { fatalError("DecodedFindMissingBlobsRequest disagrees with FindMissingBlobsRequest") }
  case (.failure(let a), .failure(let b)):
    guard "\(a)" == "\(b)" else { fatalError("FindMissingBlobsRequest errors differ: \(a) / \(b)") }
  default: fatalError("DecodedFindMissingBlobsRequest accepts what FindMissingBlobsRequest does not, or the reverse")
  }
  switch (Result { try GetActionResultRequest(serializedBytes: bytes) },
          Result { try DecodedGetActionResultRequest(serializedBytes: bytes) }) {
  case (.success(let plain), .success(let direct)):
    guard direct.actionDigest?.proto == plain.actionDigest,
      plain.actionDigest.map({ d in d.validated.map { DecodedDigest.valid($0) } ?? .invalid(d) }) == direct.actionDigest,
      direct.instanceName == plain.instanceName, direct.digestFunction == plain.digestFunction,
      direct.inlineOutputFiles == plain.inlineOutputFiles
    else { fatalError("DecodedGetActionResultRequest disagrees with GetActionResultRequest") }
  case (.failure(let a), .failure(let b)):
    guard "\(a)" == "\(b)" else { fatalError("GetActionResultRequest errors differ: \(a) / \(b)") }
  default: fatalError("DecodedGetActionResultRequest accepts what GetActionResultRequest does not, or the reverse")
  }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzProtoDecoder(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
  let bytes = Array(UnsafeBufferPointer(start: data, count: size))
  check(ActionResult.self, bytes)
  check(Action.self, bytes)
  check(Command.self, bytes)
  check(Directory.self, bytes)
  check(Tree.self, bytes)
  check(FindMissingBlobsRequest.self, bytes)
  check(DecodedFindMissingBlobsRequest.self, bytes)
  check(DecodedGetActionResultRequest.self, bytes)
  checkDecoded(bytes)
  check(BatchUpdateBlobsRequest.self, bytes)
  check(BatchReadBlobsRequest.self, bytes)
  check(GetTreeRequest.self, bytes)
  check(GetActionResultRequest.self, bytes)
  check(UpdateActionResultRequest.self, bytes)
  check(WriteRequest.self, bytes)
  check(ReadRequest.self, bytes)
  check(ServerCapabilities.self, bytes)
  check(RequestMetadata.self, bytes)
  check(RPCStatusMessage.self, bytes)
  check(ExecuteRequest.self, bytes)
  check(ExecuteResponse.self, bytes)
  check(WaitExecutionRequest.self, bytes)
  check(Operation.self, bytes)
  check(WorkerMessage.self, bytes)
  check(SchedulerMessage.self, bytes)
  return 0
}
