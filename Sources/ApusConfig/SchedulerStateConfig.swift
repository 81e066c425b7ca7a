/// Where a scheduler keeps its operations, queue and worker leases (key `state`).
///
/// `"memory"` (the default): in the process, lost with it. `{"postgres": {...}}`: in a
/// PostgreSQL database shared by every scheduler process with the same settings, so any
/// number of them serve the same instances (README "Running two or more schedulers").
public enum SchedulerStateConfig: Sendable, Equatable, Decodable {
  case memory
  case postgres(PostgresStateConfig)

  public init(from decoder: any Decoder) throws {
    if let single = try? decoder.singleValueContainer(), let word = try? single.decode(String.self) {
      guard word == "memory" else {
        throw ConfigError(
          path: jsonPath(decoder.codingPath),
          "expected \"memory\" or {\"postgres\": {\"url\": \"postgres://…\"}}, got \"\(word)\"")
      }
      self = .memory
      return
    }
    let o = try ConfigObject(decoder, allowedKeys: ["memory", "postgres"])
    if o.has("memory") {
      throw o.error("memory", "write \"state\": \"memory\" (a string), or leave \"state\" out")
    }
    guard let postgres = try o.decode(PostgresStateConfig.self, "postgres") else {
      throw ConfigError(
        path: jsonPath(decoder.codingPath), "expected \"memory\" or {\"postgres\": {\"url\": \"postgres://…\"}}")
    }
    self = .postgres(postgres)
  }
}
