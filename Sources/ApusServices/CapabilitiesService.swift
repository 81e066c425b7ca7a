import ApusProto
import ApusRPC

/// `build.bazel.remote.execution.v2.Capabilities`.
struct CapabilitiesService {
  let table: InstanceTable

  func register(on router: inout RPCRouter) {
    let table = self.table
    router.unary(
      "/build.bazel.remote.execution.v2.Capabilities/GetCapabilities", GetCapabilitiesRequest.self,
      auth: table.authorizer, instance: { $0.instanceName },
      // Built from the configuration alone: always answered on the event loop.
      now: { request, _ in try Self.capabilities(table, request.instanceName).serializedBytes() }
    ) { request, _ in
      try Self.capabilities(table, request.instanceName).serializedBytes()
    }
  }

  static func capabilities(_ table: InstanceTable, _ name: String) throws -> ServerCapabilities {
    let instance = try table.instance(name)
    var caps = ServerCapabilities()
    var low = SemVer()
    low.major = 2
    var high = SemVer()
    high.major = 2
    high.minor = 3
    caps.lowAPIVersion = low
    caps.highAPIVersion = high
    if instance.cas != nil || instance.actionCache != nil {
      var cache = CacheCapabilities()
      cache.digestFunctions = [.sha256]
      cache.supportedCompressors = [.zstd]
      cache.supportedBatchUpdateCompressors = [.zstd]
      var update = ActionCacheUpdateCapabilities()
      update.updateEnabled = instance.actionCache != nil && instance.actionCacheUpdates
      cache.actionCacheUpdateCapabilities = update
      cache.maxBatchTotalSizeBytes = table.maxBatchTotalBytes
      cache.symlinkAbsolutePathStrategy = .allowed
      caps.cacheCapabilities = cache
    }
    if instance.scheduler != nil {
      var exec = ExecutionCapabilities()
      exec.digestFunction = .sha256
      exec.digestFunctions = [.sha256]
      exec.execEnabled = true
      caps.executionCapabilities = exec
    }
    return caps
  }
}
