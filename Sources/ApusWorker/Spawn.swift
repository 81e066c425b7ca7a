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
