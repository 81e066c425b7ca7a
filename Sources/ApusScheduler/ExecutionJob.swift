import ApusProto

/// An action to run, as the Execution service hands it to the scheduler.
public struct ExecutionJob: Sendable {
  public var instanceName: String
  public var actionDigest: BlobDigest
  public var action: Action
  /// Action.platform, or Command.platform when the Action has none.
  public var platform: [Platform.Property]
  /// Lower runs sooner (REAPI ExecutionPolicy.priority).
  public var priority: Int32
  /// Identical cacheable actions in flight are merged into one operation.
  public var mergeable: Bool

  public init(
    instanceName: String, actionDigest: BlobDigest, action: Action,
    platform: [Platform.Property], priority: Int32, mergeable: Bool
  ) {
    self.instanceName = instanceName
    self.actionDigest = actionDigest
    self.action = action
    self.platform = platform
    self.priority = priority
    self.mergeable = mergeable
  }
}
