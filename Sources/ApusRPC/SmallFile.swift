#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// A small file read whole (a token file, a key), and what identifies its version.
public struct SmallFile: Sendable, Equatable {
  /// Modification time (ns since the epoch) and size: a change of either means a new version.
  public struct Version: Sendable, Equatable {
    public var modified: Int64
    public var size: Int64

    init(_ st: stat) {
      #if canImport(Darwin)
        modified = Int64(st.st_mtimespec.tv_sec) * 1_000_000_000 + Int64(st.st_mtimespec.tv_nsec)
      #else
        modified = Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec)
      #endif
      size = Int64(st.st_size)
    }
  }

  public var bytes: [UInt8]
  public var version: Version

  /// The current version of `path`, nil if it cannot be stat'ed.
  public static func version(of path: String) -> Version? {
    var st = stat()
    guard stat(path, &st) == 0 else { return nil }
    return Version(st)
  }

  /// Reads `path` whole; nil if it cannot be opened or read or exceeds `maxBytes`.
  public static func read(_ path: String, maxBytes: Int = 16 << 20) -> SmallFile? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var st = stat()
    guard fstat(fd, &st) == 0 else { return nil }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 64 * 1024)
    while true {
      let n = chunk.withUnsafeMutableBytes { systemRead(fd, $0.baseAddress, $0.count) }
      if n < 0 && errno == EINTR { continue }
      guard n >= 0 else { return nil }
      if n == 0 { break }
      bytes += chunk[..<n]
      guard bytes.count <= maxBytes else { return nil }
    }
    return SmallFile(bytes: bytes, version: Version(st))
  }
}

/// `read(2)`, reachable from inside `SmallFile.read`.
private func systemRead(_ fd: Int32, _ buffer: UnsafeMutableRawPointer?, _ count: Int) -> Int {
  read(fd, buffer, count)
}
