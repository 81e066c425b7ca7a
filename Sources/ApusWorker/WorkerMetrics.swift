import ApusProto
import Metrics

/// The `apus_worker_*` metric handles of one worker (label `worker`: its id), made once.
struct WorkerMetrics: Sendable {
  let completed: Counter
  let failed: Counter
  let timedOut: Counter
  let cancelled: Counter
  let inputFetchBytes: Counter
  let inputFetchSeconds: Timer
  let inputCacheHits: Counter
  let inputCacheMisses: Counter
  let outputUploadBytes: Counter
  let outputUploadSeconds: Timer
  /// Registrations with a scheduler: past the first, each is a reconnect.
  let registrations: Counter
  /// Results dropped while no scheduler could be reached (``PendingResults`` full).
  let resultsDropped: Counter

  init(worker: String, factory: any MetricsFactory = MetricsSystem.factory) {
    let labels = [("worker", worker)]
    func outcome(_ name: String) -> Counter {
      Counter(label: "apus_worker_actions_total", dimensions: labels + [("outcome", name)], factory: factory)
    }
    completed = outcome("completed")
    failed = outcome("failed")
    timedOut = outcome("timed_out")
    cancelled = outcome("cancelled")
    inputFetchBytes = Counter(label: "apus_worker_input_fetch_bytes_total", dimensions: labels, factory: factory)
    inputFetchSeconds = Timer(label: "apus_worker_input_fetch_seconds", dimensions: labels, factory: factory)
    inputCacheHits = Counter(label: "apus_worker_input_cache_hits_total", dimensions: labels, factory: factory)
    inputCacheMisses = Counter(label: "apus_worker_input_cache_misses_total", dimensions: labels, factory: factory)
    outputUploadBytes = Counter(label: "apus_worker_output_upload_bytes_total", dimensions: labels, factory: factory)
    outputUploadSeconds = Timer(label: "apus_worker_output_upload_seconds", dimensions: labels, factory: factory)
    registrations = Counter(label: "apus_worker_registrations_total", dimensions: labels, factory: factory)
    resultsDropped = Counter(label: "apus_worker_results_dropped_total", dimensions: labels, factory: factory)
  }

  /// Counts a finished action by how it ended: a result (any exit code), a timeout, a kill,
  /// or an error status.
  func record(_ response: ExecuteResponse, killed: Bool) {
    let code = response.status?.statusCode ?? .ok
    switch code {
    case _ where killed: cancelled.increment()
    case .ok: completed.increment()
    case .deadlineExceeded: timedOut.increment()
    case .cancelled: cancelled.increment()
    default: failed.increment()
    }
  }
}
