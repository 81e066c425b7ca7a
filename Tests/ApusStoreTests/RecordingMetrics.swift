import CoreMetrics
import Synchronization

/// A swift-metrics factory that keeps every value, so a test reads what a store recorded
/// without bootstrapping the process-wide metrics system.
final class RecordingMetrics: MetricsFactory {
  final class Handle: CounterHandler, FloatingPointCounterHandler, MeterHandler, RecorderHandler, TimerHandler {
    let value = Mutex<Double>(0)
    let count = Mutex(0)
    func increment(by amount: Int64) { value.withLock { $0 += Double(amount) } }
    func increment(by amount: Double) { value.withLock { $0 += amount } }
    func decrement(by amount: Double) { value.withLock { $0 -= amount } }
    func reset() { value.withLock { $0 = 0 } }
    func set(_ v: Int64) { value.withLock { $0 = Double(v) } }
    func set(_ v: Double) { value.withLock { $0 = v } }
    func record(_ v: Int64) { set(v) }
    func record(_ v: Double) { set(v) }
    func recordNanoseconds(_ duration: Int64) {
      count.withLock { $0 += 1 }
      set(duration)
    }
  }

  private let handles = Mutex<[String: Handle]>([:])

  static func key(_ label: String, _ dimensions: [(String, String)]) -> String {
    label + "{" + dimensions.sorted { $0.0 < $1.0 }.map { "\($0.0)=\($0.1)" }.joined(separator: ",") + "}"
  }

  private func handle(_ label: String, _ dimensions: [(String, String)]) -> Handle {
    handles.withLock { h in
      let key = Self.key(label, dimensions)
      if let existing = h[key] { return existing }
      let made = Handle()
      h[key] = made
      return made
    }
  }

  /// The value of the metric `label` with exactly these labels; nil if never made.
  func value(_ label: String, _ dimensions: [(String, String)]) -> Double? {
    handles.withLock { $0[Self.key(label, dimensions)] }?.value.withLock { $0 }
  }

  /// How many durations a timer recorded.
  func timings(_ label: String, _ dimensions: [(String, String)]) -> Int {
    handles.withLock { $0[Self.key(label, dimensions)] }?.count.withLock { $0 } ?? 0
  }

  func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
    handle(label, dimensions)
  }
  func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
    handle(label, dimensions)
  }
  func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler { handle(label, dimensions) }
  func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
    handle(label, dimensions)
  }
  func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler { handle(label, dimensions) }
  func destroyCounter(_ handler: any CounterHandler) {}
  func destroyMeter(_ handler: any MeterHandler) {}
  func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {}
  func destroyRecorder(_ handler: any RecorderHandler) {}
  func destroyTimer(_ handler: any TimerHandler) {}
}
