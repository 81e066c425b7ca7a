/// The configuration `apus` runs with no argument: a cache on 127.0.0.1:50051 with its
/// content under `~/.cache/apus` (10 GiB CAS on disk, AC on disk too so it survives).
extension ApusConfiguration {
  public static func builtInDefault(home: String) -> ApusConfiguration {
    let base = "\(home)/.cache/apus"
    return ApusConfiguration(
      stores: [
        "cas": .filesystem(FilesystemStoreSpec(path: "\(base)/cas", maxBytes: 10 << 30)),
        "ac": .filesystem(FilesystemStoreSpec(path: "\(base)/ac", maxBytes: 512 << 20)),
      ],
      servers: [
        ServerConfig(
          listen: "127.0.0.1:50051",
          instances: ["": InstanceConfig(cas: "cas", actionCache: "ac")])
      ])
  }
}
