import Logging

/// Why the server sent a GOAWAY: the `reason` label of `apus_grpc_goaways_total` and of its
/// log line.
enum GoawayReason: String, CaseIterable, Sendable {
  /// The server is shutting down (SIGTERM, drain): running calls may finish.
  case shutdown
  /// No call for `idle_timeout_seconds`.
  case idle
  /// The peer answered no PING within `keepalive_timeout_seconds`.
  case keepaliveTimeout = "keepalive_timeout"
  /// The peer broke HTTP/2 (nghttp2 closed the connection).
  case protocolError = "protocol_error"
  /// The peer reset calls in progress faster than the rapid-reset limit (CVE-2023-44487).
  case tooManyResets = "too_many_resets"
  /// A flood of control frames or CONTINUATIONs.
  case flood
  /// A fault on the server's side.
  case internalError = "internal_error"

  /// Routine closes are debug, a dead peer info, a misbehaving one (or a fault) warning.
  var logLevel: Logger.Level {
    switch self {
    case .shutdown, .idle: .debug
    case .keepaliveTimeout: .info
    case .protocolError, .tooManyResets, .flood, .internalError: .warning
    }
  }
}
