import Foundation
import Testing

@testable import ApusProto

/// Cross-checks the codec against `protoc --decode/--encode`, using a descriptor set built
/// from the buildgrid REAPI stubs (`scripts/reapi-descriptors.py`; the test command sets
/// `APUS_REAPI_DESCRIPTORS`).
@Suite(
  "Codec agrees with protoc", .timeLimit(.minutes(3)),
  .enabled(if: ProcessInfo.processInfo.environment["APUS_REAPI_DESCRIPTORS"] != nil))
struct ProtocCrossCheckTests {
  let descriptors = ProcessInfo.processInfo.environment["APUS_REAPI_DESCRIPTORS"] ?? ""

  func protoc(_ mode: String, _ type: String, input: [UInt8]) throws -> [UInt8] {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = ["protoc", "--\(mode)=\(type)", "--descriptor_set_in=\(descriptors)"]
    let stdin = Pipe(), stdout = Pipe(), stderr = Pipe()
    p.standardInput = stdin
    p.standardOutput = stdout
    p.standardError = stderr
    try p.run()
    stdin.fileHandleForWriting.write(Data(input))
    try stdin.fileHandleForWriting.close()
    let out = stdout.fileHandleForReading.readDataToEndOfFile()
    let err = stderr.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    guard p.terminationStatus == 0 else {
      throw ProtocFailure(message: String(decoding: err, as: UTF8.self))
    }
    return [UInt8](out)
  }

  struct ProtocFailure: Error { var message: String }

  static let v2 = "build.bazel.remote.execution.v2."

  static func digest(_ c: Character, _ size: Int64) -> Digest {
    var d = Digest()
    d.hash = String(repeating: c, count: 64)
    d.sizeBytes = size
    return d
  }

  /// Encodes in Swift, decodes to text with protoc, re-encodes with protoc: the bytes must
  /// be identical (a wrong field number or type would fail protoc's text round trip).
  func roundTrip<M: ProtoMessage>(_ message: M, _ type: String) throws -> String {
    let ours = message.serializedBytes()
    let text = try protoc("decode", type, input: ours)
    let theirs = try protoc("encode", type, input: text)
    #expect(theirs == ours, "\(type) bytes differ from protoc's")
    #expect(try M(serializedBytes: theirs) == message)
    return String(decoding: text, as: UTF8.self)
  }

  @Test("ActionResult with every field")
  func actionResult() throws {
    var r = ActionResult()
    var f = OutputFile()
    f.path = "out/a"
    f.digest = Self.digest("a", 5)
    f.isExecutable = true
    f.contents = [1, 2, 3]
    var props = NodeProperties()
    var p = NodeProperty()
    p.name = "k"
    p.value = "v"
    props.properties = [p]
    var mtime = Timestamp()
    mtime.seconds = 1_700_000_000
    mtime.nanos = 5
    props.mtime = mtime
    var mode = UInt32Value()
    mode.value = 0o755
    props.unixMode = mode
    f.nodeProperties = props
    r.outputFiles = [f]
    var dir = OutputDirectory()
    dir.path = "out/d"
    dir.treeDigest = Self.digest("b", 99)
    dir.isTopologicallySorted = true
    dir.rootDirectoryDigest = Self.digest("c", 7)
    r.outputDirectories = [dir]
    r.exitCode = -2
    r.stdoutRaw = [0x68, 0x69]
    r.stdoutDigest = Self.digest("d", 2)
    r.stderrRaw = [0]
    r.stderrDigest = Self.digest("e", 1)
    var link = OutputSymlink()
    link.path = "l"
    link.target = "../t"
    r.outputFileSymlinks = [link]
    r.outputDirectorySymlinks = [link]
    r.outputSymlinks = [link]
    var meta = ExecutedActionMetadata()
    meta.worker = "w1"
    meta.queuedTimestamp = mtime
    meta.executionCompletedTimestamp = mtime
    var any = AnyMessage()
    any.typeURL = "type.googleapis.com/x"
    any.value = [9]
    meta.auxiliaryMetadata = [any]
    var dur = ProtoDuration()
    dur.seconds = 3
    meta.virtualExecutionDuration = dur
    r.executionMetadata = meta
    let text = try roundTrip(r, Self.v2 + "ActionResult")
    #expect(text.contains("exit_code: -2"))
    #expect(text.contains("is_executable: true"))
    #expect(text.contains("unix_mode"))
  }

  @Test("Action, Command and Directory")
  func actionCommandDirectory() throws {
    var a = Action()
    a.commandDigest = Self.digest("1", 10)
    a.inputRootDigest = Self.digest("2", 20)
    var t = ProtoDuration()
    t.seconds = 60
    a.timeout = t
    a.doNotCache = true
    a.salt = [1]
    var platform = Platform()
    var prop = Platform.Property()
    prop.name = "OSFamily"
    prop.value = "linux"
    platform.properties = [prop]
    a.platform = platform
    _ = try roundTrip(a, Self.v2 + "Action")

    var c = Command()
    c.arguments = ["/bin/sh", "-c", "echo ü"]
    var env = Command.EnvironmentVariable()
    env.name = "PATH"
    env.value = "/bin"
    c.environmentVariables = [env]
    c.outputFiles = ["a"]
    c.outputDirectories = ["d"]
    c.platform = platform
    c.workingDirectory = "w"
    c.outputPaths = ["a", "d"]
    c.outputNodeProperties = ["mtime"]
    c.outputDirectoryFormat = 1
    _ = try roundTrip(c, Self.v2 + "Command")

    var d = Directory()
    var file = FileNode()
    file.name = "f"
    file.digest = Self.digest("3", 1)
    file.isExecutable = true
    d.files = [file]
    var sub = DirectoryNode()
    sub.name = "s"
    sub.digest = Self.digest("4", 2)
    d.directories = [sub]
    var link = SymlinkNode()
    link.name = "l"
    link.target = "f"
    d.symlinks = [link]
    _ = try roundTrip(d, Self.v2 + "Directory")
    var tree = Tree()
    tree.root = d
    tree.children = [d, Directory()]
    _ = try roundTrip(tree, Self.v2 + "Tree")
  }

  @Test("Capabilities")
  func capabilities() throws {
    var caps = ServerCapabilities()
    var cache = CacheCapabilities()
    cache.digestFunctions = [.sha256, .blake3]
    var up = ActionCacheUpdateCapabilities()
    up.updateEnabled = true
    cache.actionCacheUpdateCapabilities = up
    var pc = PriorityCapabilities()
    var range = PriorityCapabilities.PriorityRange()
    range.minPriority = -5
    range.maxPriority = 5
    pc.priorities = [range]
    cache.cachePriorityCapabilities = pc
    cache.maxBatchTotalSizeBytes = 4_000_000
    cache.symlinkAbsolutePathStrategy = .allowed
    cache.supportedCompressors = [.zstd, .deflate]
    cache.supportedBatchUpdateCompressors = [.zstd]
    // max_cas_blob_size_bytes (8) is newer than the REAPI copy in buildgrid's stubs, so it
    // is left out of this cross-check; its number comes from upstream remote_execution.proto.
    caps.cacheCapabilities = cache
    var exec = ExecutionCapabilities()
    exec.digestFunction = .sha256
    exec.execEnabled = true
    exec.executionPriorityCapabilities = pc
    exec.supportedNodeProperties = ["mtime"]
    exec.digestFunctions = [.sha256]
    caps.executionCapabilities = exec
    var v = SemVer()
    v.major = 2
    v.minor = 3
    v.patch = 1
    v.prerelease = "rc"
    caps.deprecatedAPIVersion = v
    caps.lowAPIVersion = v
    caps.highAPIVersion = v
    let text = try roundTrip(caps, Self.v2 + "ServerCapabilities")
    #expect(text.contains("digest_functions: SHA256"))
    #expect(text.contains("symlink_absolute_path_strategy: ALLOWED"))
  }

  @Test("CAS, ActionCache and ByteStream requests and responses")
  func requests() throws {
    var fm = FindMissingBlobsRequest()
    fm.instanceName = "main"
    fm.blobDigests = [Self.digest("a", 1), Self.digest("b", 2)]
    fm.digestFunction = .sha256
    _ = try roundTrip(fm, Self.v2 + "FindMissingBlobsRequest")
    var fmr = FindMissingBlobsResponse()
    fmr.missingBlobDigests = [Self.digest("a", 1)]
    _ = try roundTrip(fmr, Self.v2 + "FindMissingBlobsResponse")

    var bu = BatchUpdateBlobsRequest()
    var item = BatchUpdateBlobsRequest.Request()
    item.digest = Self.digest("c", 3)
    item.data = [1, 2, 3]
    item.compressor = .zstd
    bu.requests = [item]
    bu.digestFunction = .sha256
    _ = try roundTrip(bu, Self.v2 + "BatchUpdateBlobsRequest")
    var bur = BatchUpdateBlobsResponse()
    var status = RPCStatusMessage()
    status.code = 3
    status.message = "bad"
    var detail = AnyMessage()
    detail.typeURL = "type.googleapis.com/google.rpc.PreconditionFailure"
    var pf = PreconditionFailure()
    var violation = PreconditionFailure.Violation()
    violation.type = "MISSING"
    violation.subject = "blobs/\(String(repeating: "a", count: 64))/1"
    pf.violations = [violation]
    detail.value = pf.serializedBytes()
    status.details = [detail]
    var entry = BatchUpdateBlobsResponse.Response()
    entry.digest = Self.digest("c", 3)
    entry.status = status
    bur.responses = [entry]
    _ = try roundTrip(bur, Self.v2 + "BatchUpdateBlobsResponse")
    _ = try roundTrip(pf, "google.rpc.PreconditionFailure")

    var br = BatchReadBlobsRequest()
    br.digests = [Self.digest("d", 4)]
    br.acceptableCompressors = [.zstd]
    br.digestFunction = .sha256
    _ = try roundTrip(br, Self.v2 + "BatchReadBlobsRequest")
    var brr = BatchReadBlobsResponse()
    var rentry = BatchReadBlobsResponse.Response()
    rentry.digest = Self.digest("d", 4)
    rentry.data = [4, 3, 2, 1]
    rentry.status = status
    rentry.compressor = .deflate
    brr.responses = [rentry]
    _ = try roundTrip(brr, Self.v2 + "BatchReadBlobsResponse")

    var gt = GetTreeRequest()
    gt.instanceName = "x"
    gt.rootDigest = Self.digest("e", 5)
    gt.pageSize = 10
    gt.pageToken = "20"
    gt.digestFunction = .sha256
    _ = try roundTrip(gt, Self.v2 + "GetTreeRequest")
    var gtr = GetTreeResponse()
    gtr.directories = [Directory()]
    gtr.nextPageToken = "30"
    _ = try roundTrip(gtr, Self.v2 + "GetTreeResponse")

    var gar = GetActionResultRequest()
    gar.instanceName = "i"
    gar.actionDigest = Self.digest("f", 6)
    gar.inlineStdout = true
    gar.inlineStderr = true
    gar.inlineOutputFiles = ["a"]
    gar.digestFunction = .sha256
    _ = try roundTrip(gar, Self.v2 + "GetActionResultRequest")
    var uar = UpdateActionResultRequest()
    uar.actionDigest = Self.digest("f", 6)
    var result = ActionResult()
    result.exitCode = 1
    uar.actionResult = result
    var policy = ResultsCachePolicy()
    policy.priority = 2
    uar.resultsCachePolicy = policy
    uar.digestFunction = .sha256
    _ = try roundTrip(uar, Self.v2 + "UpdateActionResultRequest")

    var md = RequestMetadata()
    var tool = ToolDetails()
    tool.toolName = "bazel"
    tool.toolVersion = "4.2.3"
    md.toolDetails = tool
    md.actionID = "a"
    md.toolInvocationID = "b"
    md.correlatedInvocationsID = "c"
    md.actionMnemonic = "Genrule"
    md.targetID = "//x"
    md.configurationID = "k8"
    _ = try roundTrip(md, Self.v2 + "RequestMetadata")

    var read = ReadRequest()
    read.resourceName = "blobs/x/1"
    read.readOffset = 5
    read.readLimit = 6
    _ = try roundTrip(read, "google.bytestream.ReadRequest")
    var readR = ReadResponse()
    readR.data = [1]
    _ = try roundTrip(readR, "google.bytestream.ReadResponse")
    var write = WriteRequest()
    write.resourceName = "uploads/u/blobs/x/1"
    write.writeOffset = 7
    write.finishWrite = true
    write.data = [2]
    _ = try roundTrip(write, "google.bytestream.WriteRequest")
    var writeR = WriteResponse()
    writeR.committedSize = 8
    _ = try roundTrip(writeR, "google.bytestream.WriteResponse")
    var q = QueryWriteStatusRequest()
    q.resourceName = "uploads/u/blobs/x/1"
    _ = try roundTrip(q, "google.bytestream.QueryWriteStatusRequest")
    var qr = QueryWriteStatusResponse()
    qr.committedSize = 9
    qr.complete = true
    _ = try roundTrip(qr, "google.bytestream.QueryWriteStatusResponse")
  }

  @Test("a ReadResponse header matches protoc's encoding", arguments: [1, 127, 128, 262_144])
  func readResponseHeader(count: Int) throws {
    let text = "data: \"" + String(repeating: "a", count: count) + "\""
    let theirs = try protoc("encode", "google.bytestream.ReadResponse", input: Array(text.utf8))
    let header = ReadResponse.encodedHeader(dataCount: count)
    #expect(header == Array(theirs.prefix(header.count)))
    #expect(theirs.count == header.count + count)
  }

  @Test("decodes what protoc encodes from text")
  func decodesProtocOutput() throws {
    let text = """
      output_files { path: "bin/tool" digest { hash: "\(String(repeating: "a", count: 64))" size_bytes: 12 } is_executable: true }
      exit_code: 7
      stderr_raw: "oops"
      """
    let bytes = try protoc("encode", Self.v2 + "ActionResult", input: Array(text.utf8))
    let r = try ActionResult(serializedBytes: bytes)
    #expect(r.exitCode == 7)
    #expect(r.stderrRaw == Array("oops".utf8))
    #expect(r.outputFiles.first?.path == "bin/tool")
    #expect(r.outputFiles.first?.digest?.sizeBytes == 12)
    #expect(r.outputFiles.first?.isExecutable == true)
  }
}
