import CApusSystem

#if canImport(Glibc)
  import Glibc
#endif

/// The C spawn helper under a Swift name.
func apusSpawn(
  _ path: String, _ argv: UnsafePointer<UnsafeMutablePointer<CChar>?>,
  _ envp: UnsafePointer<UnsafeMutablePointer<CChar>?>, _ cwd: String, _ stdoutFD: Int32,
  _ stderrFD: Int32, _ pid: inout pid_t
) -> Int32 {
  apus_spawn(path, UnsafeMutablePointer(mutating: argv), UnsafeMutablePointer(mutating: envp), cwd, stdoutFD, stderrFD, &pid)
}

/// The fork + exec helper for isolated actions; `step` names what failed.
func apusSpawnIsolated(
  _ path: String, _ argv: UnsafePointer<UnsafeMutablePointer<CChar>?>,
  _ envp: UnsafePointer<UnsafeMutablePointer<CChar>?>, _ cwd: String, _ stdoutFD: Int32,
  _ stderrFD: Int32, _ isolation: ActionIsolation, _ blockNetwork: Bool, _ pid: inout pid_t, _ step: inout String
) -> Int32 {
  withCStrings(isolation.hide) { hide in
    var iso = apus_isolation()
    iso.change_user = isolation.uid == nil ? 0 : 1
    iso.uid = isolation.uid ?? 0
    iso.gid = isolation.gid ?? 0
    iso.no_network = blockNetwork ? 1 : 0
    var failed: UnsafePointer<CChar>?
    let rc = hide.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: isolation.hide.count + 1) { paths in
      iso.hide = paths
      return apus_spawn_isolated(
        path, UnsafeMutablePointer(mutating: argv), UnsafeMutablePointer(mutating: envp), cwd, stdoutFD, stderrFD,
        &iso, &pid, &failed)
    }
    if let failed { step = String(cString: failed) }
    return rc
  }
}
