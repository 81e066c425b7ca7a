import ApusProto
import Metrics

/// The scheduler's counters and histograms (`apus_scheduler_*`, docs/operations.md), made
/// once per scheduler. Its gauges are set from a snapshot when `/metrics` is scraped.
public struct SchedulerMetrics: Sendable {
  public let completed, failed, timedOut, cancelled, retried: Counter
  /// Executes refused because the instance's queue was at `max_queued_actions`.
  public let rejectedQueueFull: Counter
  public let queueWait, execution: Timer

  public init(scheduler: String) {
    let labels = [("scheduler", scheduler)]
    func outcome(_ name: String) -> Counter {
      Counter(label: "apus_scheduler_actions_total", dimensions: labels + [("outcome", name)])
    }
    completed = outcome("completed")
    failed = outcome("failed")
    timedOut = outcome("timed_out")
    cancelled = outcome("cancelled")
    retried = Counter(label: "apus_scheduler_actions_retried_total", dimensions: labels)
    rejectedQueueFull = Counter(
      label: "apus_scheduler_executions_rejected_total", dimensions: labels + [("reason", "queue_full")])
    queueWait = Timer(label: "apus_scheduler_queue_wait_seconds", dimensions: labels)
    execution = Timer(label: "apus_scheduler_execution_seconds", dimensions: labels)
  }

  /// Counts an executed action by how it ended: a result (any exit code) is `completed`.
  public func record(_ response: ExecuteResponse) {
    switch RPCStatusCode(rawValue: response.status?.code ?? 0) {
    case .ok: completed.increment()
    case .deadlineExceeded: timedOut.increment()
    case .cancelled: cancelled.increment()
    default: failed.increment()
    }
  }
}
