import Metrics
import Synchronization

/// The metrics of one gRPC method on the server: requests by status code, latency, bytes in
/// and out, calls in flight (`apus_grpc_*`, docs/operations.md).
///
/// Made once per route when the router is built, so a call only records (atomic adds and
/// one histogram update); the per-code counters are made on a code's first use.
final class MethodMetrics: Sendable {
  /// `Service/Method`: the path without the package, short and bounded by the router.
  let method: String
  /// Nil for long-lived calls (Execute, the worker stream): their duration is the work's.
  private let latency: Timer?
  private let received: Counter
  private let sent: Counter
  private let inFlight: Meter
  private let ok: Counter
  private let others = Mutex<[Int32: Counter]>([:])

  init(path: String, longLived: Bool) {
    let trimmed = path.hasPrefix("/") ? path.dropFirst() : Substring(path)
    let service = trimmed.split(separator: "/").first.map { $0.split(separator: ".").last ?? $0 } ?? ""
    let name = trimmed.split(separator: "/").last ?? ""
    method = "\(service)/\(name)"
    let labels = [("method", method)]
    latency = longLived ? nil : Timer(label: "apus_grpc_request_duration_seconds", dimensions: labels)
    received = Counter(label: "apus_grpc_received_bytes_total", dimensions: labels)
    sent = Counter(label: "apus_grpc_sent_bytes_total", dimensions: labels)
    inFlight = Meter(label: "apus_grpc_in_flight_requests", dimensions: labels)
    ok = Counter(label: "apus_grpc_requests_total", dimensions: labels + [("code", "OK")])
  }

  func started() { inFlight.increment() }

  func finished(code: RPCStatusCode, duration: Duration, receivedBytes: Int, sentBytes: Int) {
    inFlight.decrement()
    latency?.record(duration: duration)
    if receivedBytes > 0 { received.increment(by: Int64(receivedBytes)) }
    if sentBytes > 0 { sent.increment(by: Int64(sentBytes)) }
    counter(code).increment()
    CallTotals.requests.add(1, ordering: .relaxed)
    if code != .ok { CallTotals.errors.add(1, ordering: .relaxed) }
  }

  private func counter(_ code: RPCStatusCode) -> Counter {
    if code == .ok { return ok }
    return others.withLock { counters in
      if let c = counters[code.rawValue] { return c }
      let c = Counter(
        label: "apus_grpc_requests_total", dimensions: [("method", method), ("code", code.description)])
      counters[code.rawValue] = c
      return c
    }
  }
}

/// Calls finished on every listener of this process since start, for `/status`.
public enum CallTotals {
  static let requests = Atomic<Int>(0)
  static let errors = Atomic<Int>(0)

  /// Calls, and calls that ended with a status other than OK.
  public static var current: (requests: Int, errors: Int) {
    (requests.load(ordering: .relaxed), errors.load(ordering: .relaxed))
  }
}
