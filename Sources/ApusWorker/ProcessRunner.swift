import ApusProto
import CApusSystem
import NIOPosix
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// How a command ended.
struct ProcessOutcome: Sendable {
  var exitCode: Int32
  var timedOut: Bool
}

/// Runs one command in its own process group; a timeout or task cancellation kills the whole
/// group with SIGKILL. The blocking `waitpid` runs on the worker's thread pool.
struct ProcessRunner: Sendable {
  let pool: NIOThreadPool

  func run(
    arguments: [String], environment: [(String, String)], directory: String,
    stdoutPath: String, stderrPath: String, timeout: Duration,
    isolation: ActionIsolation = .none, blockNetwork: Bool = false
  ) async throws -> ProcessOutcome {
    guard let program = arguments.first else {
      throw ExecutionFailure(.invalidArgument, "the command has no arguments")
    }
    let path = try resolve(program, environment: environment, directory: directory)
    let out = open(stdoutPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    let err = open(stderrPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    defer {
      if out >= 0 { close(out) }
      if err >= 0 { close(err) }
    }
    guard out >= 0, err >= 0 else {
      throw ExecutionFailure(.internal, "cannot create stdout/stderr files: \(String(cString: strerror(errno)))")
    }
    var pid: pid_t = 0
    let env = environment.map { "\($0.0)=\($0.1)" }
    var step = "posix_spawn"
    var rc: Int32 = 0
    // ETXTBSY: an executable input was written moments ago, and a process another action
    // forked meanwhile still holds a copy of that write descriptor until its own exec. It
    // passes within milliseconds, so the spawn is tried again (as Go and Bazel do).
    for attempt in 0..<8 {
      step = "posix_spawn"
      rc = withCStrings(arguments) { argv in
        withCStrings(env) { envp in
          isolation.isTrivial(blockNetwork: blockNetwork)
            ? apusSpawn(path, argv, envp, directory, out, err, &pid)
            : apusSpawnIsolated(path, argv, envp, directory, out, err, isolation, blockNetwork, &pid, &step)
        }
      }
      guard rc == ETXTBSY else { break }
      try await Task.sleep(for: .milliseconds(10 << attempt))
    }
    guard rc == 0 else {
      throw ExecutionFailure(.invalidArgument, "cannot start \(program): \(step): \(String(cString: strerror(rc)))")
    }
    let target = pid
    enum Event: Sendable { case exited(Int32), timedOut }
    // Set before the timer's kill: the exit that kill causes can reach the group first.
    let timer = TimeoutFlag()
    let (status, timedOut): (Int32, Bool) = try await withTaskCancellationHandler {
      try await withThrowingTaskGroup(of: Event.self) { group in
        group.addTask {
          try await pool.runIfActive {
            var status: Int32 = 0
            while waitpid(target, &status, 0) < 0 && errno == EINTR {}
            return .exited(status)
          }
        }
        group.addTask {
          try await Task.sleep(for: timeout)
          timer.fire()
          kill(-target, SIGKILL)
          return .timedOut
        }
        while let event = try await group.next() {
          if case .exited(let status) = event {
            group.cancelAll()
            return (status, timer.fired)
          }
        }
        throw ExecutionFailure(.internal, "lost track of process \(target)")
      }
    } onCancel: {
      kill(-target, SIGKILL)
    }
    // Anything the command left running in its group goes too.
    kill(-target, SIGKILL)
    let signal = status & 0x7F
    let exitCode = signal == 0 ? (status >> 8) & 0xFF : 128 + signal
    return ProcessOutcome(exitCode: exitCode, timedOut: timedOut)
  }

  /// A name without a slash is looked up in the command's own PATH, as a shell would.
  private func resolve(_ program: String, environment: [(String, String)], directory: String) throws -> String {
    if program.contains("/") { return program }
    let pathVariable = environment.last { $0.0 == "PATH" }?.1 ?? "/usr/local/bin:/usr/bin:/bin"
    for dir in pathVariable.split(separator: ":", omittingEmptySubsequences: false) {
      let base = dir.isEmpty ? "." : String(dir)
      let candidate = base.hasPrefix("/") ? "\(base)/\(program)" : "\(directory)/\(base)/\(program)"
      if access(candidate, X_OK) == 0 { return candidate }
    }
    throw ExecutionFailure(.invalidArgument, "\(program) was not found in PATH \(pathVariable)")
  }
}

/// Calls `body` with a NULL-terminated C array of the strings.
func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
  let pointers = strings.map { strdup($0) } + [nil]
  defer { for p in pointers { free(p) } }
  return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}

/// Whether a command's timeout went off, shared by the timer and the waiter.
private final class TimeoutFlag: Sendable {
  private let state = Atomic<Bool>(false)
  func fire() { state.store(true, ordering: .sequentiallyConsistent) }
  var fired: Bool { state.load(ordering: .sequentiallyConsistent) }
}
