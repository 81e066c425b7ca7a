import CoreMetrics
import Synchronization

/// A swift-metrics factory that keeps every value, so a test reads what a store recorded
/// without bootstrapping the process-wide metrics system.
public final class RecordingMetrics: MetricsFactory {
  public init() {}

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
  public func value(_ label: String, _ dimensions: [(String, String)]) -> Double? {
    handles.withLock { $0[Self.key(label, dimensions)] }?.value.withLock { $0 }
  }

  /// How many durations a timer recorded.
  public func timings(_ label: String, _ dimensions: [(String, String)]) -> Int {
    handles.withLock { $0[Self.key(label, dimensions)] }?.count.withLock { $0 } ?? 0
  }

  public func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
    handle(label, dimensions)
  }
  public func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
    handle(label, dimensions)
  }
  public func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler { handle(label, dimensions) }
  public func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
    handle(label, dimensions)
  }
  public func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler { handle(label, dimensions) }
  public func destroyCounter(_ handler: any CounterHandler) {}
  public func destroyMeter(_ handler: any MeterHandler) {}
  public func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {}
  public func destroyRecorder(_ handler: any RecorderHandler) {}
  public func destroyTimer(_ handler: any TimerHandler) {}
}
