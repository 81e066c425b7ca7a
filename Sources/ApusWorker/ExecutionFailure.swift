import ApusProto

/// An action that could not run, with the status to report in its ExecuteResponse.
///
/// Carries an `RPCStatusMessage` rather than just a code so that a MISSING precondition
/// failure keeps the digests Bazel needs to re-upload.
struct ExecutionFailure: Error {
  var status: RPCStatusMessage

  init(_ code: RPCStatusCode, _ message: String) {
    status = RPCStatusMessage(code, message)
  }

  init(status: RPCStatusMessage) { self.status = status }
}
