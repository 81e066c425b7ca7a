import Foundation
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// A fresh directory under the system temporary directory, named `prefix-XXXXXX`; it and
/// its contents are removed when the test process exits, so test runs leave nothing behind.
public func temporaryDirectory(_ prefix: String = "apus-test") -> String {
  var template = Array((NSTemporaryDirectory() + "\(prefix)-XXXXXX").utf8CString)
  let made = template.withUnsafeMutableBufferPointer { buffer -> String? in
    guard let base = buffer.baseAddress, let path = mkdtemp(base) else { return nil }
    return String(cString: path)
  }
  guard let made else {
    fatalError("mkdtemp under \(NSTemporaryDirectory()) failed: errno \(errno)")
  }
  TemporaryDirectories.shared.add(made)
  return made
}

/// The directories `temporaryDirectory` made, removed at exit.
final class TemporaryDirectories: Sendable {
  static let shared = TemporaryDirectories()
  private let paths = Mutex<[String]>([])

  private init() {
    atexit { TemporaryDirectories.shared.removeAll() }
  }

  func add(_ path: String) { paths.withLock { $0.append(path) } }

  func removeAll() {
    for path in paths.withLock({ $0 }) { try? FileManager.default.removeItem(atPath: path) }
  }
}
