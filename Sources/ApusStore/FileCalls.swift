#if canImport(Glibc)
  import Glibc
#endif

/// A system call that failed, with the `errno` it left, read on the thread that made the call
/// and before anything else could change it.
struct SystemCallError: Error, Sendable {
  var call: String
  var code: Int32

  init(_ call: String, _ code: Int32) {
    self.call = call
    self.code = code
  }

  var text: String { String(cString: strerror(code)) }
  var isNoSpace: Bool { code == ENOSPC || code == EDQUOT }
  var isNotFound: Bool { code == ENOENT }
}

/// The blocking file calls of the filesystem store. Each throws `SystemCallError` with the
/// `errno` captured right after the call, so callers on a thread pool never read it later.
enum FileCalls {
  static func open(_ path: String, _ flags: Int32, _ mode: mode_t = 0) throws -> Int32 {
    let fd = Glibc.open(path, flags | O_CLOEXEC, mode)
    guard fd >= 0 else { throw SystemCallError("open", errno) }
    return fd
  }

  /// The size of the open file.
  static func size(_ fd: Int32) throws -> Int64 {
    var st = stat()
    guard fstat(fd, &st) == 0 else { throw SystemCallError("fstat", errno) }
    return Int64(st.st_size)
  }

  /// Up to `count` bytes at `offset`; fewer only at the end of the file.
  static func read(_ fd: Int32, count: Int, at offset: Int64) throws -> [UInt8] {
    var buffer = [UInt8](repeating: 0, count: count)
    var done = 0
    try buffer.withUnsafeMutableBytes { raw in
      while done < count {
        let n = pread(fd, raw.baseAddress! + done, count - done, off_t(offset) + off_t(done))
        if n < 0 {
          let e = errno
          if e == EINTR { continue }
          throw SystemCallError("pread", e)
        }
        if n == 0 { break }
        done += n
      }
    }
    buffer.removeLast(count - done)
    return buffer
  }

  /// Writes all of `bytes` at the file offset. On failure returns how many bytes did get
  /// written and the `errno`, so a caller can make room and continue where it stopped.
  static func write(_ fd: Int32, _ bytes: ArraySlice<UInt8>) -> (written: Int, error: Int32) {
    bytes.withUnsafeBytes { raw in
      guard let base = raw.baseAddress else { return (0, 0) }
      var done = 0
      while done < raw.count {
        let n = Glibc.write(fd, base + done, raw.count - done)
        if n < 0 {
          let e = errno
          if e == EINTR { continue }
          return (done, e)
        }
        done += n
      }
      return (done, 0)
    }
  }

  /// `fdatasync`: the file's data and size are on disk (not its timestamps).
  static func syncData(_ fd: Int32) throws {
    while fdatasync(fd) != 0 {
      let e = errno
      if e != EINTR { throw SystemCallError("fdatasync", e) }
    }
  }

  /// Makes the directory's entries (a rename or unlink in it) durable.
  static func syncDirectory(_ path: String) throws {
    let fd = try open(path, O_RDONLY | O_DIRECTORY)
    defer { close(fd) }
    while fsync(fd) != 0 {
      let e = errno
      if e != EINTR { throw SystemCallError("fsync", e) }
    }
  }

  static func rename(_ from: String, _ to: String) throws {
    guard Glibc.rename(from, to) == 0 else { throw SystemCallError("rename", errno) }
  }

  /// Bytes an unprivileged writer may still use on the filesystem holding `path`.
  static func availableBytes(_ path: String) throws -> Int64 {
    var st = statvfs()
    guard statvfs(path, &st) == 0 else { throw SystemCallError("statvfs", errno) }
    return Int64(st.f_bavail) * Int64(st.f_frsize)
  }
}
