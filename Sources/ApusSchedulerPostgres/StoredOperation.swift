import ApusProto

/// An operation as the shared state holds it: what GetOperation and watchers need.
public struct StoredOperation: Sendable, Equatable {
  public var name: String
  public var instanceName: String
  public var actionDigest: BlobDigest?
  public var stage: ExecutionStage
  public var response: ExecuteResponse?
  /// The worker running it, while executing.
  public var worker: String?

  /// The google.longrunning.Operation clients receive.
  public var operation: Operation {
    var metadata = ExecuteOperationMetadata()
    metadata.stage = stage
    metadata.actionDigest = actionDigest?.proto
    var op = Operation()
    op.name = name
    op.metadata = AnyMessage(packing: metadata, fullName: "build.bazel.remote.execution.v2.ExecuteOperationMetadata")
    if let response {
      op.done = true
      op.response = AnyMessage(packing: response, fullName: "build.bazel.remote.execution.v2.ExecuteResponse")
    }
    return op
  }
}

/// An action a worker claimed from the shared queue: the message to send it, and what its
/// scheduler needs to account for it.
public struct ClaimedAction: Sendable {
  public var start: StartAction
  /// The worker it was claimed for.
  public var worker: String
  public var platform: [Platform.Property]
  public var platformKey: String
  public var queueWait: Duration
  /// Times it was requeued because its worker was lost.
  public var attempts: Int
}

/// Queued and running work of one platform key.
public struct PlatformLoad: Sendable, Equatable {
  public var key: String
  public var queued: Int
  public var running: Int
  public var oldestQueued: Duration?
}
