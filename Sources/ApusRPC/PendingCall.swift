import Logging
import NIOCore

/// A server call as its request headers describe it, from `startCall` until a handler task
/// or the route's immediate answer takes it; then what both record when it finishes.
struct PendingCall: Sendable {
  let route: RPCRouter.Route
  let context: ServerContext
  /// From `grpc-timeout` or the listener's default; nil: none.
  let timeout: Duration?
  let requestEncoding: MessageEncoding
  let compressor: ResponseCompressor?
  /// When the read that completed its headers arrived.
  let started: NIODeadline

  /// The status a handler's error ends the call with; errors that say the server failed
  /// (UNKNOWN, INTERNAL) are logged.
  func failed(_ error: any Error, logger: Logger) -> RPCError {
    let rpcError = RPCError(from: error)
    if rpcError.code == .unknown || rpcError.code == .internal {
      logger.warning("call failed", metadata: ["path": "\(context.path)", "error": "\(rpcError)"])
    }
    return rpcError
  }

  /// Counts the finished call in its method's metrics and logs it when slow (or at debug
  /// level), before its status goes out: a client that saw its answer finds the call in
  /// /metrics and the log.
  func finished(
    code: RPCStatusCode, receivedBytes: Int, sentBytes: Int, logger: Logger,
    options: GRPCServerOptions
  ) {
    let elapsed = Duration(NIODeadline.now() - started)
    let metrics = route.metrics
    metrics.finished(
      code: code, duration: elapsed, receivedBytes: receivedBytes, sentBytes: sentBytes)
    let slowAfter = route.longLived ? nil : options.slowCallThreshold
    let slow = slowAfter.map { elapsed >= $0 } ?? false
    guard slow || logger.logLevel <= .debug else { return }
    var fields: Logger.Metadata = [
      "method": "\(metrics.method)", "code": "\(code)",
      "duration_ms":
        "\(((Double(elapsed.components.seconds) * 1e6 + Double(elapsed.components.attoseconds) / 1e12).rounded()) / 1000)",
      "received_bytes": "\(receivedBytes)", "sent_bytes": "\(sentBytes)", "peer": "\(context.peer)",
    ]
    if let logFields = options.callLogFields {
      fields.merge(logFields(context.metadata)) { current, _ in current }
    }
    if slow {
      logger.warning("slow call", metadata: fields)
    } else {
      logger.debug("call finished", metadata: fields)
    }
  }
}
