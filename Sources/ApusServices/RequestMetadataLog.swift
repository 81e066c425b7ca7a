import ApusProto
import ApusRPC
import Logging

/// Log fields from Bazel's `RequestMetadata` header, so a slow or failed call in the log
/// can be traced to the build, action and target that made it.
public enum RequestMetadataLog {
  static let header = "build.bazel.remote.execution.v2.requestmetadata-bin"

  /// The non-empty fields of the call's RequestMetadata; none when absent or malformed.
  @Sendable public static func fields(_ metadata: Metadata) -> Logger.Metadata {
    guard let bytes = metadata.binary(header), let m = try? RequestMetadata(serializedBytes: bytes) else {
      return [:]
    }
    var fields: Logger.Metadata = [:]
    if let tool = m.toolDetails, !tool.toolName.isEmpty {
      fields["tool"] = "\(tool.toolName) \(tool.toolVersion)"
    }
    let named = [
      ("tool_invocation_id", m.toolInvocationID), ("correlated_invocations_id", m.correlatedInvocationsID),
      ("action_mnemonic", m.actionMnemonic), ("target_id", m.targetID), ("action_id", m.actionID),
    ]
    for (key, value) in named where !value.isEmpty { fields[key] = "\(value)" }
    return fields
  }
}
