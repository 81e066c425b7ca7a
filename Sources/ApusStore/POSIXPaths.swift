#if canImport(Glibc)
  import Glibc
#endif

/// Directory calls the filesystem store and the worker share. Blocking: call them on a
/// thread pool. Failures return `nil`/the failing path with `errno` set, so each caller
/// builds its own error.
public enum POSIXPaths {
  /// The names in a directory, without `.` and `..`, sorted; `nil` if it cannot be opened.
  public static func list(_ path: String) -> [String]? {
    guard let dir = opendir(path) else { return nil }
    defer { closedir(dir) }
    var names: [String] = []
    while let entry = readdir(dir) {
      let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
        String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
      }
      if name != "." && name != ".." { names.append(name) }
    }
    return names.sorted()
  }

  /// `mkdir -p`. Returns the path that could not be created, or `nil` on success.
  public static func makeDirectories(_ path: String) -> String? {
    var prefix = path.hasPrefix("/") ? "" : "."
    for part in path.split(separator: "/") {
      prefix += "/\(part)"
      if mkdir(prefix, 0o755) != 0 && errno != EEXIST { return prefix }
    }
    return nil
  }

  public static var errorText: String { String(cString: strerror(errno)) }
}
