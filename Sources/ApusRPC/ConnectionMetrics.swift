import CoreMetrics

/// The connection-level gRPC server metrics (docs/operations.md): GOAWAY and RST_STREAM
/// frames sent, by reason, and open connections.
///
/// Handles are made on first use, which comes after `MetricsSystem.bootstrap` (the first
/// connection); one per reason, so recording is a table look-up and an atomic add.
enum ConnectionMetrics {
  static let goaways: [GoawayReason: Counter] = Dictionary(
    uniqueKeysWithValues: GoawayReason.allCases.map {
      ($0, Counter(label: "apus_grpc_goaways_total", dimensions: [("reason", $0.rawValue)]))
    })
  static let resets: [StreamResetReason: Counter] = Dictionary(
    uniqueKeysWithValues: StreamResetReason.allCases.map {
      ($0, Counter(label: "apus_grpc_stream_resets_total", dimensions: [("reason", $0.rawValue)]))
    })
  /// Open client connections on all listeners.
  static let connections = Meter(label: "apus_grpc_connections")
}
