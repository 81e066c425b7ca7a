import CoreMetrics

/// The named stores as the admin listener sees them: what each holds, whether it can serve,
/// and the gauges sampled at scrape time. Made by ``StoreFactory/monitor`` once the stores are
/// built; immutable, so any task may use it.
public struct StoreMonitor: Sendable {
  struct Named: Sendable {
    var name: String
    var usage: (@Sendable () -> StoreUsage)?
    var reach: StoreReach
    var metrics: StoreMetrics?
    var writeBehind: [WriteBehindQueue]
  }

  let stores: [Named]

  /// Entries and bytes held by each named store that knows (memory, filesystem, and wrappers
  /// of them); the others are absent.
  public func usage() -> [String: StoreUsage] {
    stores.reduce(into: [:]) { out, store in out[store.name] = store.usage?() }
  }

  /// Sets `apus_store_entries`/`_bytes` and `apus_store_write_behind_entries`/`_bytes` to what
  /// the stores hold now; the admin listener calls it right before rendering `/metrics`.
  public func updateGauges() {
    for store in stores {
      guard let metrics = store.metrics else { continue }
      if let usage = store.usage?() {
        metrics.entries.set(usage.entries)
        metrics.bytes.set(usage.bytes)
      }
      if !store.writeBehind.isEmpty {
        let depths = store.writeBehind.map(\.depth)
        metrics.writeBehindEntries.set(depths.reduce(0) { $0 + $1.entries })
        metrics.writeBehindBytes.set(depths.reduce(Int64(0)) { $0 + $1.bytes })
      }
    }
  }

  /// Whether each named store can serve: the remote backends it needs are probed (HEAD of an
  /// S3 bucket, GetCapabilities of a gRPC server), each backend's answer cached 5 s and each
  /// probe bounded to about 2 s, all stores concurrently.
  public func health() async -> [String: StoreHealth] {
    await withTaskGroup(of: (String, StoreHealth).self) { group in
      for store in stores {
        let reach = store.reach
        group.addTask { (store.name, await reach.health()) }
      }
      var out: [String: StoreHealth] = [:]
      for await (name, health) in group { out[name] = health }
      return out
    }
  }
}
