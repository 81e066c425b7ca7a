import ApusProto
import ApusStore
import NIOPosix

#if canImport(Glibc)
  import Glibc
#endif

/// Blocking file helpers, always called on the worker's thread pool.
enum FileIO {
  static func errorText() -> String { String(cString: strerror(errno)) }

  /// SHA-256 and size of a file, read in 1 MiB pieces.
  static func digest(ofFile path: String) throws -> BlobDigest {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw ExecutionFailure(.internal, "open \(path): \(errorText())") }
    defer { close(fd) }
    let hasher = SHA256Hasher()
    var buffer = [UInt8](repeating: 0, count: 1 << 20)
    var total: Int64 = 0
    while true {
      let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
      if n < 0 && errno == EINTR { continue }
      guard n >= 0 else { throw ExecutionFailure(.internal, "read \(path): \(errorText())") }
      if n == 0 { break }
      buffer.withUnsafeBytes { hasher.update(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
      total += Int64(n)
    }
    return BlobDigest(hashBytes: hasher.finish(), sizeBytes: total)
  }

  static func copy(_ from: String, to: String, mode: mode_t) throws {
    let src = open(from, O_RDONLY | O_CLOEXEC)
    guard src >= 0 else { throw ExecutionFailure(.internal, "open \(from): \(errorText())") }
    defer { close(src) }
    let dst = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
    guard dst >= 0 else { throw ExecutionFailure(.internal, "create \(to): \(errorText())") }
    defer { close(dst) }
    while true {
      let n = sendfile(dst, src, nil, 1 << 30)
      if n < 0 && errno == EINTR { continue }
      guard n >= 0 else { throw ExecutionFailure(.internal, "copy to \(to): \(errorText())") }
      if n == 0 { break }
    }
    fchmod(dst, mode)
  }

  static func makeDirectories(_ path: String) throws {
    if let failed = POSIXPaths.makeDirectories(path) {
      throw ExecutionFailure(.internal, "mkdir \(failed): \(errorText())")
    }
  }

  /// `rm -rf`, not following symlinks; read-only directories are made writable first.
  static func removeTree(_ path: String) {
    var st = stat()
    guard lstat(path, &st) == 0 else { return }
    if st.st_mode & S_IFMT == S_IFDIR {
      chmod(path, 0o755)
      for name in POSIXPaths.list(path) ?? [] { removeTree("\(path)/\(name)") }
      rmdir(path)
    } else {
      unlink(path)
    }
  }

  /// Gives every directory under (and including) `path` to `uid`:`gid`; files and symlinks
  /// are left as they are.
  static func chownDirectories(_ path: String, uid: uid_t, gid: gid_t) throws {
    var st = stat()
    guard lstat(path, &st) == 0, st.st_mode & S_IFMT == S_IFDIR else { return }
    guard chown(path, uid, gid) == 0 else { throw ExecutionFailure(.internal, "chown \(path): \(errorText())") }
    for name in try listDirectory(path) { try chownDirectories("\(path)/\(name)", uid: uid, gid: gid) }
  }

  static func listDirectory(_ path: String) throws -> [String] {
    guard let names = POSIXPaths.list(path) else {
      throw ExecutionFailure(.internal, "opendir \(path): \(errorText())")
    }
    return names
  }

  static func readLink(_ path: String) throws -> String {
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    let n = readlink(path, &buffer, buffer.count - 1)
    guard n >= 0 else { throw ExecutionFailure(.internal, "readlink \(path): \(errorText())") }
    return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
  }
}

/// A file's content as chunks, read on a thread pool: uploads never hold a whole file.
struct FileChunks: AsyncSequence, Sendable {
  typealias Element = ArraySlice<UInt8>
  let path: String
  let pool: NIOThreadPool

  struct AsyncIterator: AsyncIteratorProtocol {
    let path: String
    let pool: NIOThreadPool
    var offset: Int64 = 0
    var done = false

    mutating func next() async throws -> ArraySlice<UInt8>? {
      guard !done else { return nil }
      let (path, at) = (self.path, offset)
      let chunk = try await pool.runIfActive { () throws -> [UInt8] in
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ExecutionFailure(.internal, "open \(path): \(FileIO.errorText())") }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(at)) }
        guard n >= 0 else { throw ExecutionFailure(.internal, "read \(path): \(FileIO.errorText())") }
        buffer.removeLast(buffer.count - n)
        return buffer
      }
      if chunk.isEmpty {
        done = true
        return nil
      }
      offset += Int64(chunk.count)
      return chunk[...]
    }
  }

  func makeAsyncIterator() -> AsyncIterator { AsyncIterator(path: path, pool: pool) }
}
