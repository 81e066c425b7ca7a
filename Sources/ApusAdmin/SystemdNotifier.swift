#if canImport(Glibc)
  import Glibc
#endif

/// The sd_notify protocol without libsystemd: one datagram to the `AF_UNIX` socket named by
/// `NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace). Without the variable (not
/// started by systemd as `Type=notify`) sending does nothing.
public struct SystemdNotifier: Sendable {
  let socketPath: String?

  public init(environment: [String: String]) {
    socketPath = environment["NOTIFY_SOCKET"].flatMap { $0.isEmpty ? nil : $0 }
  }

  public var isEnabled: Bool { socketPath != nil }

  /// Sends `state` (e.g. `READY=1`); returns the error text if it could not.
  @discardableResult
  public func notify(_ state: String) -> String? {
    guard let socketPath else { return nil }
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    var path = Array(socketPath.utf8)
    if path.first == UInt8(ascii: "@") { path[0] = 0 }  // abstract namespace
    let capacity = MemoryLayout.size(ofValue: address.sun_path)
    guard path.count < capacity else { return "NOTIFY_SOCKET is too long" }
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
      raw.copyBytes(from: path)
    }
    let length = socklen_t(MemoryLayout<sa_family_t>.size + path.count)
    let message = Array(state.utf8)
    return withUnsafePointer(to: &address) { pointer in
      pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa -> String? in
        // errno is read in the same closure as the call that set it.
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return "socket: \(String(cString: strerror(errno)))" }
        defer { close(fd) }
        let sent = message.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, 0, sa, length) }
        return sent < 0 ? "sendto \(socketPath): \(String(cString: strerror(errno)))" : nil
      }
    }
  }
}
