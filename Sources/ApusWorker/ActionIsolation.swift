import ApusConfig
import CApusSystem

#if canImport(Glibc)
  import Glibc
#endif

/// What an action may not see or do on this worker: the user it runs as (`run_as`, when the
/// worker is root) and the paths hidden from it in a mount namespace of its own (the
/// worker's input cache, its private key and token file, `hide_paths`). Actions with the `block-network`
/// platform property get a network namespace with only loopback.
struct ActionIsolation: Sendable {
  var uid: uid_t?
  var gid: gid_t?
  var hide: [String]
  let workerIsRoot: Bool

  static let none = ActionIsolation(uid: nil, gid: nil, hide: [], workerIsRoot: geteuid() == 0)

  /// Resolves `run_as` names; namespaces and changing user need the worker to run as root.
  init(_ config: WorkerConfig) throws {
    workerIsRoot = geteuid() == 0
    hide = []
    guard let runAs = config.runAs else {
      guard config.hidePaths.isEmpty else {
        throw ExecutionFailure(.invalidArgument, "workers[].hide_paths needs run_as: hiding paths from actions that run as the worker's own user would not stop them")
      }
      return
    }
    guard workerIsRoot else {
      throw ExecutionFailure(.invalidArgument, "workers[].run_as needs the worker to run as root (it runs as uid \(geteuid()))")
    }
    guard let user = getpwnam(runAs.user) else {
      throw ExecutionFailure(.invalidArgument, "workers[].run_as.user: no user named \"\(runAs.user)\"")
    }
    uid = user.pointee.pw_uid
    if let group = runAs.group {
      guard let g = getgrnam(group) else {
        throw ExecutionFailure(.invalidArgument, "workers[].run_as.group: no group named \"\(group)\"")
      }
      gid = g.pointee.gr_gid
    } else {
      gid = user.pointee.pw_gid
    }
    guard uid != 0 else { throw ExecutionFailure(.invalidArgument, "workers[].run_as.user must not be root") }
    // What an action could use to act as the worker, or to poison what other actions get.
    hide = [config.cacheDirectory] + [config.tls?.privateKey, config.tokenFile].compactMap { $0 } + config.hidePaths
    for path in hide where config.workDirectory == path || config.workDirectory.hasPrefix(path + "/") {
      throw ExecutionFailure(
        .invalidArgument, "workers[].work_directory is inside \(path), which is hidden from actions")
    }
  }

  private init(uid: uid_t?, gid: gid_t?, hide: [String], workerIsRoot: Bool) {
    self.uid = uid
    self.gid = gid
    self.hide = hide
    self.workerIsRoot = workerIsRoot
  }

  /// Whether a process needs more than posix_spawn gives.
  func isTrivial(blockNetwork: Bool) -> Bool { uid == nil && hide.isEmpty && !blockNetwork }
}
