extension RPCStatusMessage {
  /// FAILED_PRECONDITION with one `MISSING` violation per blob (`blobs/{hash}/{size}`), the
  /// form REAPI clients read to re-upload inputs and retry.
  public static func missingBlobs(_ digests: [BlobDigest], _ message: String) -> RPCStatusMessage {
    var failure = PreconditionFailure()
    failure.violations = digests.map { d in
      var v = PreconditionFailure.Violation()
      v.type = "MISSING"
      v.subject = "blobs/\(d.hashHex)/\(d.sizeBytes)"
      return v
    }
    var status = RPCStatusMessage()
    status.code = RPCStatusCode.failedPrecondition.rawValue
    status.message = message
    status.details = [AnyMessage(packing: failure, fullName: "google.rpc.PreconditionFailure")]
    return status
  }
}
