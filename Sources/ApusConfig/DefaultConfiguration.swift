/// The configuration `apus` runs with no argument: cache, scheduler and one local worker on
/// 127.0.0.1:50051, everything under `~/.cache/apus` (CAS 10 GiB on disk, AC on disk).
extension ApusConfiguration {
  public static func builtInDefault(home: String) -> ApusConfiguration {
    let base = "\(home)/.cache/apus"
    let listen = "127.0.0.1:50051"
    return ApusConfiguration(
      stores: [
        "cas": .filesystem(FilesystemStoreSpec(path: "\(base)/cas", maxBytes: 10 << 30)),
        "ac": .filesystem(FilesystemStoreSpec(path: "\(base)/ac", maxBytes: 512 << 20)),
      ],
      schedulers: ["main": SchedulerConfig()],
      servers: [
        ServerConfig(
          listen: listen,
          instances: ["": InstanceConfig(cas: "cas", actionCache: "ac", execution: "main")],
          workerAPI: "main")
      ],
      workers: [
        WorkerConfig(
          scheduler: "grpc://\(listen)", cas: "grpc://\(listen)", workDirectory: "\(base)/work",
          cacheDirectory: "\(base)/worker-cache", cacheMaxBytes: 5 << 30)
      ])
  }
}
