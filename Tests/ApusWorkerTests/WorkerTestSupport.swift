import ApusTestSupport
import ApusProto
import ApusStore
import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// A fresh directory for a worker test, removed when the test process exits.
func temporaryDirectory() -> String { ApusTestSupport.temporaryDirectory("apus-worker-test") }

/// Whether `pid` has exited: no such process, or a zombie nobody has reaped yet.
func processIsGone(_ pid: pid_t) -> Bool {
  let missing = kill(pid, 0) != 0 && errno == ESRCH
  if missing { return true }
  guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
    let close = stat.lastIndex(of: ")")
  else { return true }
  return stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).hasPrefix("Z")
}

/// The process id a test command wrote to `path` (`echo $$ > path`), once it is there.
func waitForPID(at path: String) async -> pid_t? {
  var pid: pid_t?
  _ = await eventually {
    guard let text = try? String(contentsOfFile: path, encoding: .utf8),
      let value = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines))
    else { return false }
    pid = value
    return true
  }
  return pid
}

/// A shell command as an Action in `cas`, ready to hand to a runner.
struct ShellAction {
  var action: Action
  var actionDigest: BlobDigest

  init(_ script: String, outputs: [String] = [], timeoutSeconds: Int64? = nil, in cas: any BlobStore) async throws {
    var command = Command()
    command.arguments = ["/bin/sh", "-c", script]
    var path = Command.EnvironmentVariable()
    path.name = "PATH"
    path.value = "/usr/local/bin:/usr/bin:/bin"
    command.environmentVariables = [path]
    command.outputPaths = outputs
    let commandBytes = command.serializedBytes()
    let commandDigest = SHA256Hasher.digest(of: commandBytes)
    try await cas.writeAll(commandDigest, commandBytes)
    let root = Directory().serializedBytes()
    let rootDigest = SHA256Hasher.digest(of: root)
    try await cas.writeAll(rootDigest, root)
    action = Action()
    action.commandDigest = commandDigest.proto
    action.inputRootDigest = rootDigest.proto
    if let timeoutSeconds {
      var t = ProtoDuration()
      t.seconds = timeoutSeconds
      action.timeout = t
    }
    // A random salt keeps identical scripts in different tests from sharing a digest.
    action.salt = (0..<8).map { _ in UInt8.random(in: 0...255) }
    let actionBytes = action.serializedBytes()
    actionDigest = SHA256Hasher.digest(of: actionBytes)
    try await cas.writeAll(actionDigest, actionBytes)
  }

  /// What the scheduler would send a worker for this action.
  func start(name: String = "operations/test", timeout: Duration = .seconds(60)) -> StartAction {
    var start = StartAction()
    start.operationName = name
    start.actionDigest = actionDigest.proto
    start.action = action
    var t = ProtoDuration()
    t.seconds = timeout.components.seconds
    t.nanos = Int32(timeout.components.attoseconds / 1_000_000_000)
    start.timeout = t
    return start
  }
}

/// The bytes of a blob the action result names.
func blob(_ digest: Digest?, in cas: any BlobStore) async throws -> String? {
  guard let digest = digest?.validated, let bytes = try await cas.readAll(digest, maxBytes: 1 << 20) else {
    return nil
  }
  return String(decoding: bytes, as: UTF8.self)
}
