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

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzProtoDecoder(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
  let bytes = Array(UnsafeBufferPointer(start: data, count: size))
  check(ActionResult.self, bytes)
  check(Action.self, bytes)
  check(Command.self, bytes)
  check(Directory.self, bytes)
  check(Tree.self, bytes)
  check(FindMissingBlobsRequest.self, bytes)
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
