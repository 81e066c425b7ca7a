#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Whole seconds for LRU ages: coarse on purpose, so an index entry stores 4 bytes of time.
enum StoreClock {
  static func now() -> UInt32 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt32(truncatingIfNeeded: ts.tv_sec)
  }
}
