import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// A small tmpfs to fill up: the real ENOSPC path, no injected failures. Mounting needs
/// root (CI runs as root); tests that need it are disabled otherwise.
enum Tmpfs {
  /// Whether this process may mount a tmpfs, probed once.
  static let canMount: Bool = {
    let dir = temporaryDirectory()
    guard mount("tmpfs", dir, "tmpfs", 0, "size=64k") == 0 else { return false }
    umount(dir)
    return true
  }()

  /// Runs `body` with a fresh tmpfs of `bytes` mounted at a new directory, then unmounts it.
  static func with<T>(bytes: Int, _ body: (String) async throws -> T) async throws -> T {
    let dir = temporaryDirectory()
    guard mount("tmpfs", dir, "tmpfs", 0, "size=\(bytes)") == 0 else {
      throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EPERM)
    }
    defer { umount2(dir, 2) }  // MNT_DETACH: unmount even if a file is still open
    return try await body(dir)
  }

  /// Bytes still free on the filesystem holding `path`.
  static func available(_ path: String) -> Int64 {
    var st = statvfs()
    guard statvfs(path, &st) == 0 else { return -1 }
    return Int64(st.f_bavail) * Int64(st.f_frsize)
  }
}
