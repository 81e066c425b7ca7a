import Metrics
import Synchronization

/// `apus_s3_requests_total{verb,status}`, `apus_s3_retries_total{verb}` and
/// `apus_s3_request_duration_seconds{verb}`, with handles made at first use and cached.
///
/// One lock per request is cheap next to an S3 round trip.
final class S3Metrics: Sendable {
  /// Shared by every S3 client; made at the first request, after metrics are bootstrapped.
  static let shared = S3Metrics()

  private struct State {
    var requests: [String: Counter] = [:]
    var retries: [String: Counter] = [:]
    var durations: [String: Timer] = [:]
  }

  private let factory: any MetricsFactory
  private let state = Mutex(State())

  init(factory: any MetricsFactory = MetricsSystem.factory) {
    self.factory = factory
  }

  /// One attempt that ended with `status` (nil: no response) after `duration`.
  func request(_ verb: String, status: UInt?, duration: Duration) {
    let statusText = status.map { String($0) } ?? "error"
    let (counter, timer) = state.withLock { s in
      let key = verb + " " + statusText
      let counter =
        s.requests[key]
        ?? {
          let c = Counter(
            label: "apus_s3_requests_total", dimensions: [("verb", verb), ("status", statusText)], factory: factory)
          s.requests[key] = c
          return c
        }()
      let timer =
        s.durations[verb]
        ?? {
          let t = Timer(label: "apus_s3_request_duration_seconds", dimensions: [("verb", verb)], factory: factory)
          s.durations[verb] = t
          return t
        }()
      return (counter, timer)
    }
    counter.increment()
    timer.record(duration: duration)
  }

  /// An attempt after the first one.
  func retry(_ verb: String) {
    let counter = state.withLock { s in
      s.retries[verb]
        ?? {
          let c = Counter(label: "apus_s3_retries_total", dimensions: [("verb", verb)], factory: factory)
          s.retries[verb] = c
          return c
        }()
    }
    counter.increment()
  }
}
