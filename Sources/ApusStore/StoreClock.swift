#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Whole seconds for LRU ages: coarse on purpose, so an index entry stores 4 bytes of time.
enum StoreClock {
  static func now() -> UInt32 {
    var ts = timespec()
    #if os(Linux)
      // The tick-granular clock: a read of the vDSO page, no TSC read, once per store call.
      clock_gettime(CLOCK_MONOTONIC_COARSE, &ts)
    #else
      clock_gettime(CLOCK_MONOTONIC, &ts)
    #endif
    return UInt32(truncatingIfNeeded: ts.tv_sec)
  }
}
