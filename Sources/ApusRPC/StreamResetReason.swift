import Logging

/// Why the server sent an RST_STREAM: the `reason` label of `apus_grpc_stream_resets_total`.
enum StreamResetReason: String, CaseIterable, Sendable {
  /// The call ended (answered, failed, past its deadline) while its request was still
  /// open: the rest of the request is not wanted (RFC 9113 §8.1, NO_ERROR).
  case cancelledByServer = "cancelled_by_server"
  /// A request body that sent nothing for `upload_idle_timeout_seconds`.
  case uploadStalled = "upload_stalled"
  /// A frame that breaks HTTP/2 on that stream.
  case protocolError = "protocol_error"
  /// Over SETTINGS_MAX_CONCURRENT_STREAMS.
  case refused
  /// A fault on the server's side.
  case internalError = "internal_error"

  /// nil: not logged per stream (routine, or logged by whoever reset it).
  var logLevel: Logger.Level? {
    switch self {
    case .cancelledByServer, .uploadStalled: nil
    case .refused: .debug
    case .protocolError: .info
    case .internalError: .warning
    }
  }
}
