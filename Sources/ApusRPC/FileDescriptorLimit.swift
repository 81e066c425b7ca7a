#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// The process's open-file limit: every connection is a descriptor, so a listener's
/// `max_connections` is only reachable if the limit allows it.
public enum FileDescriptorLimit {
  /// Raises the soft limit to the hard limit; returns the limit now in force.
  @discardableResult
  public static func raiseToHardLimit() -> Int {
    var limit = rlimit()
    guard getrlimit(RLIMIT_NOFILE_VALUE, &limit) == 0 else { return -1 }
    if limit.rlim_cur < limit.rlim_max {
      var raised = limit
      raised.rlim_cur = limit.rlim_max
      if setrlimit(RLIMIT_NOFILE_VALUE, &raised) == 0 { return Int(clamping: raised.rlim_cur) }
    }
    return Int(clamping: limit.rlim_cur)
  }
}

#if canImport(Glibc)
  private let RLIMIT_NOFILE_VALUE = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
#else
  private let RLIMIT_NOFILE_VALUE = RLIMIT_NOFILE
#endif
