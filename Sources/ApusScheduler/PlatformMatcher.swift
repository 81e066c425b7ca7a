import ApusConfig
import ApusProto

/// Matches an action's platform properties against a worker's, by the configured rules.
public struct PlatformMatcher: Sendable {
  let rules: [String: SchedulerConfig.PropertyRule]

  public init(rules: [String: SchedulerConfig.PropertyRule]) {
    self.rules = rules
  }

  /// Rejects properties the scheduler does not know (REAPI: unknown names SHOULD fail).
  public func validate(_ properties: [Platform.Property]) throws(SchedulerError) {
    for p in properties {
      guard let rule = rules[p.name] else {
        throw SchedulerError(
          .invalidArgument,
          "platform property \"\(p.name)\" is not known to this scheduler; known: \(rules.keys.sorted().joined(separator: ", "))")
      }
      if rule == .minimum && Double(p.value) == nil {
        throw SchedulerError(
          .invalidArgument, "platform property \"\(p.name)\" must be a number, got \"\(p.value)\"")
      }
    }
  }

  /// Whether `worker` could run the action, given what it has reserved already.
  func matches(_ properties: [Platform.Property], _ worker: WorkerRecord, ignoringLoad: Bool) -> Bool {
    matches(properties, offered: worker.properties, reserved: ignoringLoad ? [:] : worker.reserved)
  }

  /// Whether a worker offering `offered`, with `reserved` held by its running actions,
  /// could run the action.
  func matches(
    _ properties: [Platform.Property], offered: [String: [String]], reserved: [String: Double] = [:]
  ) -> Bool {
    Self.matches(properties, offered: offered, reserved: reserved, rules: rules)
  }

  /// The same, for callers holding only the rules (the PostgreSQL backend's platform keys).
  public static func matches(
    _ properties: [Platform.Property], offered: [String: [String]], reserved: [String: Double],
    rules: [String: SchedulerConfig.PropertyRule]
  ) -> Bool {
    for p in properties {
      switch rules[p.name] {
      case .exact:
        guard offered[p.name, default: []].contains(p.value) else { return false }
      case .minimum:
        let need = Double(p.value) ?? 0
        let have = offered[p.name]?.compactMap(Double.init).max() ?? 0
        guard have - reserved[p.name, default: 0] >= need else { return false }
      case .priority, .ignore, nil:
        continue
      }
    }
    return true
  }

  /// The amounts of `minimum` properties an action holds while it runs.
  func reservations(_ properties: [Platform.Property]) -> [String: Double] {
    var out: [String: Double] = [:]
    for p in properties where rules[p.name] == .minimum {
      out[p.name, default: 0] += Double(p.value) ?? 0
    }
    return out
  }
}

/// What the scheduler knows of a connected worker.
struct WorkerRecord {
  let id: String
  var properties: [String: [String]]
  var capacity: Int
  var running: Set<String> = []
  var reserved: [String: Double] = [:]
  var lastSeen: ContinuousClock.Instant
  var draining = false
  let send: @Sendable (SchedulerMessage) -> Void

  var hasFreeSlot: Bool { !draining && running.count < capacity }
}
