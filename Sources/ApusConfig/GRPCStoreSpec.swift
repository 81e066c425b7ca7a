/// `grpc`: another REAPI server's CAS or action cache, e.g. a shared cache behind a local
/// proxy.
public struct GRPCStoreSpec: Sendable, Equatable, Decodable {
  /// `grpc://host:port`. Required.
  public var url: String
  /// The remote instance name (key `instance_name`, default "").
  public var instanceName: String
  /// Key `role`: `action_cache` (true) or `cas` (false, the default).
  public var actionCache: Bool

  public init(url: String, instanceName: String = "", actionCache: Bool = false) {
    self.url = url
    self.instanceName = instanceName
    self.actionCache = actionCache
  }

  public init(from decoder: any Decoder) throws {
    let o = try ConfigObject(decoder, allowedKeys: ["url", "instance_name", "role"])
    url = try o.requiredString("url")
    guard url.hasPrefix("grpc://"), ServerConfig.splitHostPort(String(url.dropFirst(7))) != nil else {
      throw o.error("url", "expected grpc://host:port, got \"\(url)\"")
    }
    let role = try o.string("role") ?? "cas"
    guard role == "cas" || role == "action_cache" else {
      throw o.error("role", "expected cas or action_cache, got \"\(role)\"")
    }
    instanceName = try o.string("instance_name") ?? ""
    actionCache = role == "action_cache"
  }
}
