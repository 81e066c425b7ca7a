import CoreMetrics
import Synchronization

/// Action-cache hits and misses per instance since start: `apus_action_cache_lookups_total`
/// for Prometheus, and readable counts for `/status`'s hit rates.
public final class ActionCacheLookups: Sendable {
  /// Process-wide, like the metrics registry: listeners serving the same instance add up.
  public static let shared = ActionCacheLookups()

  final class Counts: Sendable {
    let hits = Atomic<Int>(0), misses = Atomic<Int>(0)
    let hit: Counter, miss: Counter
    init(instance: String) {
      hit = Counter(label: "apus_action_cache_lookups_total", dimensions: [("instance_name", instance), ("result", "hit")])
      miss = Counter(label: "apus_action_cache_lookups_total", dimensions: [("instance_name", instance), ("result", "miss")])
    }
    func record(hit found: Bool) {
      if found {
        hits.add(1, ordering: .relaxed)
        hit.increment()
      } else {
        misses.add(1, ordering: .relaxed)
        miss.increment()
      }
    }
  }

  /// One instance's counts, looked up once: the lock and the dictionary of `counts(_:)` are
  /// only taken on the instance's first lookup, not on every call.
  final class Slot: Sendable {
    let instance: String
    /// Unretained: `shared` keeps every Counts it makes for the life of the process.
    private let found = Atomic<Unmanaged<Counts>?>(nil)

    init(instance: String) { self.instance = instance }

    var counts: Counts {
      if let known = found.load(ordering: .acquiring) { return known.takeUnretainedValue() }
      // Racing first lookups store the same object: `counts(_:)` makes one per name.
      let counts = ActionCacheLookups.shared.counts(instance)
      found.store(Unmanaged.passUnretained(counts), ordering: .releasing)
      return counts
    }
  }

  private let counts = Mutex<[String: Counts]>([:])

  /// The counter of `instance`, made on first use (instances are fixed by the config).
  func counts(_ instance: String) -> Counts {
    counts.withLock { all in
      if let c = all[instance] { return c }
      let c = Counts(instance: instance)
      all[instance] = c
      return c
    }
  }

  /// Hits and misses per instance name.
  public func snapshot() -> [String: (hits: Int, misses: Int)] {
    counts.withLock { all in
      all.mapValues { ($0.hits.load(ordering: .relaxed), $0.misses.load(ordering: .relaxed)) }
    }
  }
}
