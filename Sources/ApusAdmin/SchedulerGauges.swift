import ApusScheduler
import CoreMetrics
import Synchronization

/// A scheduler's gauges, set from a snapshot at each scrape. A platform that no longer has
/// queued work is set to 0 rather than left at its last value.
final class SchedulerGauges: Sendable {
  private let scheduler: String
  private let running, workers, slots, busy, desired: Gauge
  private let queued = Mutex<[String: Gauge]>([:])

  init(scheduler: String) {
    self.scheduler = scheduler
    let labels = [("scheduler", scheduler)]
    running = Gauge(label: "apus_scheduler_actions_running", dimensions: labels)
    workers = Gauge(label: "apus_scheduler_workers", dimensions: labels)
    slots = Gauge(label: "apus_scheduler_slots", dimensions: labels)
    busy = Gauge(label: "apus_scheduler_slots_busy", dimensions: labels)
    desired = Gauge(label: "apus_scheduler_desired_workers", dimensions: labels)
  }

  func update(_ s: SchedulerSnapshot) {
    running.record(s.running)
    workers.record(s.workers.count)
    slots.record(s.slots)
    busy.record(s.busy)
    desired.record(s.desiredWorkers)
    let now = Dictionary(s.platforms.map { ($0.label, $0.queued) }, uniquingKeysWith: +)
    queued.withLock { gauges in
      for label in Set(gauges.keys).union(now.keys) {
        let gauge =
          gauges[label]
          ?? Gauge(label: "apus_scheduler_actions_queued", dimensions: [("scheduler", scheduler), ("platform", label)])
        gauges[label] = gauge
        gauge.record(now[label] ?? 0)
      }
    }
  }
}
