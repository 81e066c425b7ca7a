import CoreMetrics
import Prometheus

/// The process's Prometheus registry behind swift-metrics: every layer records through the
/// standard `Counter`/`Timer`/`Meter` API, and `/metrics` renders this registry.
public enum MetricsRegistry {
  public static let shared = PrometheusCollectorRegistry()

  /// Routes swift-metrics to `shared`. Call once, before any metric handle is made; without
  /// it (no `admin` listener) recording goes to swift-metrics' no-op handlers.
  public static func bootstrap() {
    var factory = PrometheusMetricsFactory(registry: shared)
    factory.defaultDurationHistogramBuckets = durationBuckets
    MetricsSystem.bootstrap(factory)
  }

  /// 100 µs … 60 s: a cache hit is sub-millisecond, an action or a large blob takes seconds.
  static let durationBuckets: [Duration] = [
    .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2.5),
    .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
    .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5), .seconds(10),
    .seconds(30), .seconds(60),
  ]
}
