import ApusRPC

/// Builds the router for every REAPI service an instance table can serve.
public enum RemoteExecutionAPI {
  public static func router(for table: InstanceTable) -> RPCRouter {
    var router = RPCRouter()
    CapabilitiesService(table: table).register(on: &router)
    ContentAddressableStorageService(table: table).register(on: &router)
    ByteStreamService(table: table, uploads: UploadTable()).register(on: &router)
    ActionCacheService(table: table).register(on: &router)
    if !table.schedulers.isEmpty { ExecutionService(table: table).register(on: &router) }
    return router
  }
}
