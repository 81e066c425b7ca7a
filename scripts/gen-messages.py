#!/usr/bin/env python3
"""Generates Sources/ApusProto/Messages/*.swift from the field tables below.

Field numbers are facts from the upstream .proto files (bazelbuild/remote-apis,
googleapis). Run after editing a table: python3 scripts/gen-messages.py
Kinds: string, bytes, bytes_slice (an ArraySlice of the received message: no copy, and it
keeps the message alive), int64, int32, uint32, bool, enum:T, msg:T (optional sub-message),
[msg:T], [string], [enum:T] (packed), [bytes], digest (a Digest sub-message decoded
straight into a BlobDigest: DecodedDigest?). A message may carry a fourth element, its doc
comment lines, in place of the proto name.
"""
import os

GET_ACTION_RESULT_REQUEST = [
  ("instanceName", "string", 1), ("actionDigest", "msg:Digest", 2),
  ("inlineStdout", "bool", 3), ("inlineStderr", "bool", 4),
  ("inlineOutputFiles", "[string]", 5), ("digestFunction", "enum:DigestFunction", 6)]

FILES = {
  "WellKnownTypes": [
    ("Timestamp", "google.protobuf.Timestamp", [("seconds", "int64", 1), ("nanos", "int32", 2)]),
    ("ProtoDuration", "google.protobuf.Duration", [("seconds", "int64", 1), ("nanos", "int32", 2)]),
    ("AnyMessage", "google.protobuf.Any", [("typeURL", "string", 1), ("value", "bytes", 2)]),
    ("RPCStatusMessage", "google.rpc.Status",
     [("code", "int32", 1), ("message", "string", 2), ("details", "[msg:AnyMessage]", 3)]),
    ("PreconditionFailure", "google.rpc.PreconditionFailure",
     [("violations", "[msg:PreconditionFailure.Violation]", 1)]),
    ("PreconditionFailure.Violation", "google.rpc.PreconditionFailure.Violation",
     [("type", "string", 1), ("subject", "string", 2), ("description", "string", 3)]),
    ("BadRequest", "google.rpc.BadRequest",
     [("fieldViolations", "[msg:BadRequest.FieldViolation]", 1)]),
    ("BadRequest.FieldViolation", "google.rpc.BadRequest.FieldViolation",
     [("field", "string", 1), ("description", "string", 2)]),
  ],
  "Digest": [
    ("Digest", "build.bazel.remote.execution.v2.Digest",
     [("hash", "string", 1), ("sizeBytes", "int64", 2)]),
  ],
  "Directory": [
    ("Directory", "build.bazel.remote.execution.v2.Directory",
     [("files", "[msg:FileNode]", 1), ("directories", "[msg:DirectoryNode]", 2),
      ("symlinks", "[msg:SymlinkNode]", 3), ("nodeProperties", "msg:NodeProperties", 5)]),
    ("FileNode", "build.bazel.remote.execution.v2.FileNode",
     [("name", "string", 1), ("digest", "msg:Digest", 2), ("isExecutable", "bool", 4),
      ("nodeProperties", "msg:NodeProperties", 6)]),
    ("DirectoryNode", "build.bazel.remote.execution.v2.DirectoryNode",
     [("name", "string", 1), ("digest", "msg:Digest", 2)]),
    ("SymlinkNode", "build.bazel.remote.execution.v2.SymlinkNode",
     [("name", "string", 1), ("target", "string", 2), ("nodeProperties", "msg:NodeProperties", 4)]),
    ("NodeProperties", "build.bazel.remote.execution.v2.NodeProperties",
     [("properties", "[msg:NodeProperty]", 1), ("mtime", "msg:Timestamp", 2),
      ("unixMode", "msg:UInt32Value", 3)]),
    ("NodeProperty", "build.bazel.remote.execution.v2.NodeProperty",
     [("name", "string", 1), ("value", "string", 2)]),
    ("UInt32Value", "google.protobuf.UInt32Value", [("value", "uint32", 1)]),
    ("Tree", "build.bazel.remote.execution.v2.Tree",
     [("root", "msg:Directory", 1), ("children", "[msg:Directory]", 2)]),
  ],
  "Action": [
    ("Action", "build.bazel.remote.execution.v2.Action",
     [("commandDigest", "msg:Digest", 1), ("inputRootDigest", "msg:Digest", 2),
      ("timeout", "msg:ProtoDuration", 6), ("doNotCache", "bool", 7), ("salt", "bytes", 9),
      ("platform", "msg:Platform", 10)]),
    ("Command", "build.bazel.remote.execution.v2.Command",
     [("arguments", "[string]", 1),
      ("environmentVariables", "[msg:Command.EnvironmentVariable]", 2),
      ("outputFiles", "[string]", 3), ("outputDirectories", "[string]", 4),
      ("platform", "msg:Platform", 5), ("workingDirectory", "string", 6),
      ("outputPaths", "[string]", 7), ("outputNodeProperties", "[string]", 8),
      ("outputDirectoryFormat", "int32", 9)]),
    ("Command.EnvironmentVariable", "build.bazel.remote.execution.v2.Command.EnvironmentVariable",
     [("name", "string", 1), ("value", "string", 2)]),
    ("Platform", "build.bazel.remote.execution.v2.Platform",
     [("properties", "[msg:Platform.Property]", 1)]),
    ("Platform.Property", "build.bazel.remote.execution.v2.Platform.Property",
     [("name", "string", 1), ("value", "string", 2)]),
  ],
  "ActionResult": [
    ("ActionResult", "build.bazel.remote.execution.v2.ActionResult",
     [("outputFiles", "[msg:OutputFile]", 2), ("outputDirectories", "[msg:OutputDirectory]", 3),
      ("exitCode", "int32", 4), ("stdoutRaw", "bytes", 5), ("stdoutDigest", "msg:Digest", 6),
      ("stderrRaw", "bytes", 7), ("stderrDigest", "msg:Digest", 8),
      ("executionMetadata", "msg:ExecutedActionMetadata", 9),
      ("outputFileSymlinks", "[msg:OutputSymlink]", 10),
      ("outputDirectorySymlinks", "[msg:OutputSymlink]", 11),
      ("outputSymlinks", "[msg:OutputSymlink]", 12)]),
    ("OutputFile", "build.bazel.remote.execution.v2.OutputFile",
     [("path", "string", 1), ("digest", "msg:Digest", 2), ("isExecutable", "bool", 4),
      ("contents", "bytes", 5), ("nodeProperties", "msg:NodeProperties", 7)]),
    ("OutputDirectory", "build.bazel.remote.execution.v2.OutputDirectory",
     [("path", "string", 1), ("treeDigest", "msg:Digest", 3),
      ("isTopologicallySorted", "bool", 4), ("rootDirectoryDigest", "msg:Digest", 5)]),
    ("OutputSymlink", "build.bazel.remote.execution.v2.OutputSymlink",
     [("path", "string", 1), ("target", "string", 2), ("nodeProperties", "msg:NodeProperties", 4)]),
    ("ExecutedActionMetadata", "build.bazel.remote.execution.v2.ExecutedActionMetadata",
     [("worker", "string", 1), ("queuedTimestamp", "msg:Timestamp", 2),
      ("workerStartTimestamp", "msg:Timestamp", 3),
      ("workerCompletedTimestamp", "msg:Timestamp", 4),
      ("inputFetchStartTimestamp", "msg:Timestamp", 5),
      ("inputFetchCompletedTimestamp", "msg:Timestamp", 6),
      ("executionStartTimestamp", "msg:Timestamp", 7),
      ("executionCompletedTimestamp", "msg:Timestamp", 8),
      ("outputUploadStartTimestamp", "msg:Timestamp", 9),
      ("outputUploadCompletedTimestamp", "msg:Timestamp", 10),
      ("auxiliaryMetadata", "[msg:AnyMessage]", 11),
      ("virtualExecutionDuration", "msg:ProtoDuration", 12)]),
  ],
  "Capabilities": [
    ("GetCapabilitiesRequest", "build.bazel.remote.execution.v2.GetCapabilitiesRequest",
     [("instanceName", "string", 1)]),
    ("ServerCapabilities", "build.bazel.remote.execution.v2.ServerCapabilities",
     [("cacheCapabilities", "msg:CacheCapabilities", 1),
      ("executionCapabilities", "msg:ExecutionCapabilities", 2),
      ("deprecatedAPIVersion", "msg:SemVer", 3), ("lowAPIVersion", "msg:SemVer", 4),
      ("highAPIVersion", "msg:SemVer", 5)]),
    ("SemVer", "build.bazel.semver.SemVer",
     [("major", "int32", 1), ("minor", "int32", 2), ("patch", "int32", 3),
      ("prerelease", "string", 4)]),
    ("CacheCapabilities", "build.bazel.remote.execution.v2.CacheCapabilities",
     [("digestFunctions", "[enum:DigestFunction]", 1),
      ("actionCacheUpdateCapabilities", "msg:ActionCacheUpdateCapabilities", 2),
      ("cachePriorityCapabilities", "msg:PriorityCapabilities", 3),
      ("maxBatchTotalSizeBytes", "int64", 4),
      ("symlinkAbsolutePathStrategy", "enum:SymlinkAbsolutePathStrategy", 5),
      ("supportedCompressors", "[enum:Compressor]", 6),
      ("supportedBatchUpdateCompressors", "[enum:Compressor]", 7),
      ("maxCASBlobSizeBytes", "int64", 8)]),
    ("ActionCacheUpdateCapabilities",
     "build.bazel.remote.execution.v2.ActionCacheUpdateCapabilities",
     [("updateEnabled", "bool", 1)]),
    ("PriorityCapabilities", "build.bazel.remote.execution.v2.PriorityCapabilities",
     [("priorities", "[msg:PriorityCapabilities.PriorityRange]", 1)]),
    ("PriorityCapabilities.PriorityRange",
     "build.bazel.remote.execution.v2.PriorityCapabilities.PriorityRange",
     [("minPriority", "int32", 1), ("maxPriority", "int32", 2)]),
    ("ExecutionCapabilities", "build.bazel.remote.execution.v2.ExecutionCapabilities",
     [("digestFunction", "enum:DigestFunction", 1), ("execEnabled", "bool", 2),
      ("executionPriorityCapabilities", "msg:PriorityCapabilities", 3),
      ("supportedNodeProperties", "[string]", 4),
      ("digestFunctions", "[enum:DigestFunction]", 5)]),
  ],
  "ContentAddressableStorageMessages": [
    ("FindMissingBlobsRequest", "build.bazel.remote.execution.v2.FindMissingBlobsRequest",
     [("instanceName", "string", 1), ("blobDigests", "[msg:Digest]", 2),
      ("digestFunction", "enum:DigestFunction", 3)]),
    ("FindMissingBlobsResponse", "build.bazel.remote.execution.v2.FindMissingBlobsResponse",
     [("missingBlobDigests", "[msg:Digest]", 2)]),
    ("BatchUpdateBlobsRequest", "build.bazel.remote.execution.v2.BatchUpdateBlobsRequest",
     [("instanceName", "string", 1), ("requests", "[msg:BatchUpdateBlobsRequest.Request]", 2),
      ("digestFunction", "enum:DigestFunction", 5)]),
    ("BatchUpdateBlobsRequest.Request",
     "build.bazel.remote.execution.v2.BatchUpdateBlobsRequest.Request",
     [("digest", "msg:Digest", 1), ("data", "bytes", 2), ("compressor", "enum:Compressor", 3)]),
    ("BatchUpdateBlobsResponse", "build.bazel.remote.execution.v2.BatchUpdateBlobsResponse",
     [("responses", "[msg:BatchUpdateBlobsResponse.Response]", 1)]),
    ("BatchUpdateBlobsResponse.Response",
     "build.bazel.remote.execution.v2.BatchUpdateBlobsResponse.Response",
     [("digest", "msg:Digest", 1), ("status", "msg:RPCStatusMessage", 2)]),
    ("BatchReadBlobsRequest", "build.bazel.remote.execution.v2.BatchReadBlobsRequest",
     [("instanceName", "string", 1), ("digests", "[msg:Digest]", 2),
      ("acceptableCompressors", "[enum:Compressor]", 3),
      ("digestFunction", "enum:DigestFunction", 4)]),
    ("BatchReadBlobsResponse", "build.bazel.remote.execution.v2.BatchReadBlobsResponse",
     [("responses", "[msg:BatchReadBlobsResponse.Response]", 1)]),
    ("BatchReadBlobsResponse.Response",
     "build.bazel.remote.execution.v2.BatchReadBlobsResponse.Response",
     [("digest", "msg:Digest", 1), ("data", "bytes", 2), ("status", "msg:RPCStatusMessage", 3),
      ("compressor", "enum:Compressor", 4)]),
    ("GetTreeRequest", "build.bazel.remote.execution.v2.GetTreeRequest",
     [("instanceName", "string", 1), ("rootDigest", "msg:Digest", 2), ("pageSize", "int32", 3),
      ("pageToken", "string", 4), ("digestFunction", "enum:DigestFunction", 5)]),
    ("GetTreeResponse", "build.bazel.remote.execution.v2.GetTreeResponse",
     [("directories", "[msg:Directory]", 1), ("nextPageToken", "string", 2)]),
  ],
  "ActionCacheMessages": [
    ("GetActionResultRequest", "build.bazel.remote.execution.v2.GetActionResultRequest",
     GET_ACTION_RESULT_REQUEST),
    ("DecodedGetActionResultRequest", "build.bazel.remote.execution.v2.GetActionResultRequest",
     [(n, "digest" if k == "msg:Digest" else k, f) for n, k, f in GET_ACTION_RESULT_REQUEST],
     ["`GetActionResultRequest` as the server reads it: `action_digest` decodes straight into",
      "a ``BlobDigest`` from the received bytes (see ``DecodedDigest``).",
      "",
      "The same wire form as ``GetActionResultRequest``; decoding rejects the same malformed",
      "input with the same errors."]),
    ("UpdateActionResultRequest", "build.bazel.remote.execution.v2.UpdateActionResultRequest",
     [("instanceName", "string", 1), ("actionDigest", "msg:Digest", 2),
      ("actionResult", "msg:ActionResult", 3), ("resultsCachePolicy", "msg:ResultsCachePolicy", 4),
      ("digestFunction", "enum:DigestFunction", 5)]),
    ("ResultsCachePolicy", "build.bazel.remote.execution.v2.ResultsCachePolicy",
     [("priority", "int32", 1)]),
    ("RequestMetadata", "build.bazel.remote.execution.v2.RequestMetadata",
     [("toolDetails", "msg:ToolDetails", 1), ("actionID", "string", 2),
      ("toolInvocationID", "string", 3), ("correlatedInvocationsID", "string", 4),
      ("actionMnemonic", "string", 5), ("targetID", "string", 6), ("configurationID", "string", 7)]),
    ("ToolDetails", "build.bazel.remote.execution.v2.ToolDetails",
     [("toolName", "string", 1), ("toolVersion", "string", 2)]),
  ],
  "ExecutionMessages": [
    ("ExecuteRequest", "build.bazel.remote.execution.v2.ExecuteRequest",
     [("instanceName", "string", 1), ("skipCacheLookup", "bool", 3),
      ("actionDigest", "msg:Digest", 6), ("executionPolicy", "msg:ExecutionPolicy", 7),
      ("resultsCachePolicy", "msg:ResultsCachePolicy", 8),
      ("digestFunction", "enum:DigestFunction", 9), ("inlineStdout", "bool", 10),
      ("inlineStderr", "bool", 11), ("inlineOutputFiles", "[string]", 12)]),
    ("ExecutionPolicy", "build.bazel.remote.execution.v2.ExecutionPolicy",
     [("priority", "int32", 1)]),
    ("ExecuteResponse", "build.bazel.remote.execution.v2.ExecuteResponse",
     [("result", "msg:ActionResult", 1), ("cachedResult", "bool", 2),
      ("status", "msg:RPCStatusMessage", 3), ("message", "string", 5)]),
    ("ExecuteOperationMetadata", "build.bazel.remote.execution.v2.ExecuteOperationMetadata",
     [("stage", "enum:ExecutionStage", 1), ("actionDigest", "msg:Digest", 2),
      ("stdoutStreamName", "string", 3), ("stderrStreamName", "string", 4),
      ("partialExecutionMetadata", "msg:ExecutedActionMetadata", 5),
      ("digestFunction", "enum:DigestFunction", 6)]),
    ("WaitExecutionRequest", "build.bazel.remote.execution.v2.WaitExecutionRequest",
     [("name", "string", 1)]),
  ],
  "OperationsMessages": [
    ("Operation", "google.longrunning.Operation",
     [("name", "string", 1), ("metadata", "msg:AnyMessage", 2), ("done", "bool", 3),
      ("error", "msg:RPCStatusMessage", 4), ("response", "msg:AnyMessage", 5)]),
    ("GetOperationRequest", "google.longrunning.GetOperationRequest", [("name", "string", 1)]),
    ("CancelOperationRequest", "google.longrunning.CancelOperationRequest",
     [("name", "string", 1)]),
    ("DeleteOperationRequest", "google.longrunning.DeleteOperationRequest",
     [("name", "string", 1)]),
    ("WaitOperationRequest", "google.longrunning.WaitOperationRequest",
     [("name", "string", 1), ("timeout", "msg:ProtoDuration", 2)]),
    ("ListOperationsRequest", "google.longrunning.ListOperationsRequest",
     [("filter", "string", 1), ("pageSize", "int32", 2), ("pageToken", "string", 3),
      ("name", "string", 4)]),
    ("ListOperationsResponse", "google.longrunning.ListOperationsResponse",
     [("operations", "[msg:Operation]", 1), ("nextPageToken", "string", 2)]),
    ("EmptyMessage", "google.protobuf.Empty", []),
  ],
  "WorkerProtocol": [
    ("WorkerMessage", "apus.worker.v1.WorkerMessage",
     [("register", "msg:WorkerRegister", 1), ("keepAlive", "msg:EmptyMessage", 2),
      ("finished", "msg:ActionFinished", 3), ("goingAway", "msg:EmptyMessage", 4)]),
    ("WorkerRegister", "apus.worker.v1.Register",
     [("workerID", "string", 1), ("properties", "[msg:Platform.Property]", 2),
      ("maxConcurrentActions", "int32", 3), ("runningOperations", "[string]", 4)]),
    ("ActionFinished", "apus.worker.v1.ActionFinished",
     [("operationName", "string", 1), ("response", "msg:ExecuteResponse", 2),
      ("handedBack", "bool", 3)]),
    ("SchedulerMessage", "apus.worker.v1.SchedulerMessage",
     [("registered", "msg:WorkerRegistered", 1), ("start", "msg:StartAction", 2),
      ("kill", "msg:KillAction", 3)]),
    ("WorkerRegistered", "apus.worker.v1.Registered", [("keepAliveSeconds", "int32", 1)]),
    ("StartAction", "apus.worker.v1.StartAction",
     [("operationName", "string", 1), ("instanceName", "string", 2),
      ("actionDigest", "msg:Digest", 3), ("action", "msg:Action", 4),
      ("timeout", "msg:ProtoDuration", 5), ("queued", "msg:Timestamp", 6)]),
    ("KillAction", "apus.worker.v1.KillAction", [("operationName", "string", 1)]),
  ],
  "ByteStreamMessages": [
    ("ReadRequest", "google.bytestream.ReadRequest",
     [("resourceName", "string", 1), ("readOffset", "int64", 2), ("readLimit", "int64", 3)]),
    ("ReadResponse", "google.bytestream.ReadResponse", [("data", "bytes", 10)]),
    ("WriteRequest", "google.bytestream.WriteRequest",
     [("resourceName", "string", 1), ("writeOffset", "int64", 2), ("finishWrite", "bool", 3),
      ("data", "bytes_slice", 10)]),
    ("WriteResponse", "google.bytestream.WriteResponse", [("committedSize", "int64", 1)]),
    ("QueryWriteStatusRequest", "google.bytestream.QueryWriteStatusRequest",
     [("resourceName", "string", 1)]),
    ("QueryWriteStatusResponse", "google.bytestream.QueryWriteStatusResponse",
     [("committedSize", "int64", 1), ("complete", "bool", 2)]),
  ],
}

SCALAR = {
  "string": ("String", '""', "string", "string"),
  "bytes": ("[UInt8]", "[]", "bytes", "bytes"),
  "bytes_slice": ("ArraySlice<UInt8>", "[]", "bytesSlice", "bytes"),
  "int64": ("Int64", "0", "int64", "int64"),
  "int32": ("Int32", "0", "int32", "int32"),
  "bool": ("Bool", "false", "bool", "bool"),
}


def field_decl(name, kind):
  if kind in SCALAR:
    t, d, _, _ = SCALAR[kind]
    return f"public var {name}: {t} = {d}"
  if kind == "uint32":
    return f"public var {name}: UInt32 = 0"
  if kind.startswith("enum:"):
    return f"public var {name}: {kind[5:]} = {kind[5:]}(rawValue: 0)"
  if kind.startswith("msg:"):
    return f"public var {name}: {kind[4:]}?"
  if kind == "digest":
    return f"public var {name}: DecodedDigest?"
  if kind == "[string]":
    return f"public var {name}: [String] = []"
  if kind.startswith("[msg:"):
    return f"public var {name}: [{kind[5:-1]}] = []"
  if kind.startswith("[enum:"):
    return f"public var {name}: [{kind[6:-1]}] = []"
  raise ValueError(kind)


def decode_case(name, kind, num):
  if kind in SCALAR:
    return f"case {num}: {name} = try reader.{SCALAR[kind][2]}(tag)"
  if kind == "uint32":
    return f"case {num}: {name} = UInt32(truncatingIfNeeded: try reader.uint64(tag))"
  if kind.startswith("enum:"):
    return f"case {num}: {name} = {kind[5:]}(rawValue: try reader.int32(tag))"
  if kind.startswith("msg:"):
    return f"case {num}: {name} = try reader.message(tag, as: {kind[4:]}.self)"
  if kind == "digest":
    return f"case {num}: {name} = try reader.digest(tag)"
  if kind == "[string]":
    return f"case {num}: {name}.append(try reader.string(tag))"
  if kind.startswith("[msg:"):
    return f"case {num}: {name}.append(try reader.message(tag, as: {kind[5:-1]}.self))"
  if kind.startswith("[enum:"):
    t = kind[6:-1]
    return (f"case {num}:\n        var raw: [UInt64] = []\n"
            f"        try reader.appendVarints(tag, to: &raw)\n"
            f"        {name}.append(contentsOf: raw.map {{ {t}(rawValue: Int32(truncatingIfNeeded: $0)) }})")
  raise ValueError(kind)


def encode_line(name, kind, num):
  if kind in SCALAR:
    return f"writer.{SCALAR[kind][3]}({num}, {name})"
  if kind == "uint32":
    return f"writer.uint64({num}, UInt64({name}))"
  if kind.startswith("enum:"):
    return f"writer.int32({num}, {name}.rawValue)"
  if kind.startswith("msg:"):
    return f"writer.message({num}, {name})"
  if kind == "digest":
    return f"writer.message({num}, {name}?.proto)"
  if kind == "[string]":
    return f"writer.strings({num}, {name})"
  if kind.startswith("[msg:"):
    return f"writer.messages({num}, {name})"
  if kind.startswith("[enum:"):
    return f"writer.packedVarints({num}, {name}.map {{ UInt64(bitPattern: Int64($0.rawValue)) }})"
  raise ValueError(kind)


def gen_message(swift_name, full_name, fields, doc=None):
  short = swift_name.split(".")[-1]
  nested = "." in swift_name
  head = f"extension {swift_name.rsplit('.', 1)[0]} {{\n" if nested else ""
  tail = "}\n" if nested else ""
  ind = "  " if nested else ""
  lines = [f"{ind}///{' ' + l if l else ''}" for l in (doc or [f"`{full_name}`."])]
  lines.append(f"{ind}public struct {short}: ProtoMessage {{")
  for name, kind, _ in fields:
    lines.append(f"{ind}  {field_decl(name, kind)}")
  lines.append("")
  lines.append(f"{ind}  public init() {{}}")
  lines.append("")
  lines.append(f"{ind}  public init(reading reader: inout ProtoReader) throws {{")
  lines.append(f"{ind}    while let tag = try reader.nextTag() {{")
  lines.append(f"{ind}      switch tag.number {{")
  for name, kind, num in fields:
    for l in decode_case(name, kind, num).split("\n"):
      lines.append(f"{ind}      {l}")
  lines.append(f"{ind}      default: try reader.skip(tag)")
  lines.append(f"{ind}      }}")
  lines.append(f"{ind}    }}")
  lines.append(f"{ind}  }}")
  lines.append("")
  lines.append(f"{ind}  public func encode(to writer: inout ProtoWriter) {{")
  for name, kind, num in fields:
    lines.append(f"{ind}    {encode_line(name, kind, num)}")
  lines.append(f"{ind}  }}")
  lines.append(f"{ind}}}")
  return head + "\n".join(lines) + "\n" + tail


def main():
  root = os.path.join(os.path.dirname(__file__), "..", "Sources", "ApusProto", "Messages")
  os.makedirs(root, exist_ok=True)
  for fname, messages in FILES.items():
    out = ["// Generated by scripts/gen-messages.py from its field tables. Do not edit.\n"]
    for m in messages:
      out.append(gen_message(*m))
    with open(os.path.join(root, fname + ".swift"), "w") as f:
      f.write("\n".join(out))


if __name__ == "__main__":
  main()
