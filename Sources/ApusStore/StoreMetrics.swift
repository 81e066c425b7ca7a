import CoreMetrics

/// The metric handles of one named store (`store` label), made once when the factory
/// builds it, so recording costs no registry lookup.
public final class StoreMetrics: Sendable {
  let hits: Counter
  let misses: Counter
  let readBytes: Counter
  let writtenBytes: Counter
  let readErrors: Counter
  let writeErrors: Counter
  let findMissingErrors: Counter
  /// Entries evicted by size, count or age limits; the memory and filesystem stores count here.
  public let evictions: Counter
  let entries: Meter
  let bytes: Meter
  let writeBehindEntries: Meter
  let writeBehindBytes: Meter

  /// `factory` is the bootstrapped one unless a test passes its own.
  public init(store: String, factory: any MetricsFactory = MetricsSystem.factory) {
    let labels = [("store", store)]
    func counter(_ label: String, _ extra: [(String, String)] = []) -> Counter {
      Counter(label: label, dimensions: labels + extra, factory: factory)
    }
    func meter(_ label: String) -> Meter { Meter(label: label, dimensions: labels, factory: factory) }
    hits = counter("apus_store_hits_total")
    misses = counter("apus_store_misses_total")
    readBytes = counter("apus_store_read_bytes_total")
    writtenBytes = counter("apus_store_written_bytes_total")
    readErrors = counter("apus_store_errors_total", [("operation", "read")])
    writeErrors = counter("apus_store_errors_total", [("operation", "write")])
    findMissingErrors = counter("apus_store_errors_total", [("operation", "find_missing")])
    evictions = counter("apus_store_evictions_total")
    entries = meter("apus_store_entries")
    bytes = meter("apus_store_bytes")
    writeBehindEntries = meter("apus_store_write_behind_entries")
    writeBehindBytes = meter("apus_store_write_behind_bytes")
  }
}

/// What a store holds now: entries and their bytes (memory and filesystem stores know it).
public struct StoreUsage: Sendable, Equatable {
  public var entries: Int
  public var bytes: Int64

  public init(entries: Int, bytes: Int64) {
    self.entries = entries
    self.bytes = bytes
  }

  static func + (a: StoreUsage, b: StoreUsage) -> StoreUsage {
    StoreUsage(entries: a.entries + b.entries, bytes: a.bytes + b.bytes)
  }
}
