import ApusConfig
import ApusProto

/// The properties of an action that restrict where it runs (its `exact` and `minimum`
/// ones), sorted: actions with equal keys can run on exactly the same workers, so they
/// share one lane of the queue — in memory (`ActionQueue`) and in PostgreSQL, where
/// `rawValue` is the `platform_key` column workers claim by.
public struct PlatformKey: Hashable, Sendable, CustomStringConvertible {
  public struct Requirement: Hashable, Sendable, Comparable {
    public let name: String
    public let value: String
    public static func < (a: Requirement, b: Requirement) -> Bool { (a.name, a.value) < (b.name, b.value) }
  }

  public let requirements: [Requirement]
  /// The same as platform properties, for the matcher (made once: matching is per event).
  public let properties: [Platform.Property]

  public init(_ platform: [Platform.Property], rules: [String: SchedulerConfig.PropertyRule]) {
    requirements = platform.compactMap { p in
      switch rules[p.name] {
      case .exact, .minimum: Requirement(name: p.name, value: p.value)
      case .priority, .ignore, nil: nil
      }
    }.sorted()
    properties = requirements.map { var p = Platform.Property(); p.name = $0.name; p.value = $0.value; return p }
  }

  public static func == (a: PlatformKey, b: PlatformKey) -> Bool { a.requirements == b.requirements }
  public func hash(into hasher: inout Hasher) { hasher.combine(requirements) }

  /// One string: `name=value` lines in order (the shared scheduler's `platform_key`).
  public var rawValue: String { requirements.map { "\($0.name)=\($0.value)" }.joined(separator: "\n") }

  public var description: String {
    requirements.isEmpty ? "none" : requirements.map { "\($0.name)=\($0.value)" }.joined(separator: ",")
  }

  /// Whether a worker offering `offered`, with `reserved` amounts of `minimum` properties
  /// held by its running actions, can take one more action of this key.
  public func isSatisfied(
    by offered: [String: [String]], reserved: [String: Double], rules: [String: SchedulerConfig.PropertyRule]
  ) -> Bool {
    PlatformMatcher.matches(properties, offered: offered, reserved: reserved, rules: rules)
  }

  /// Whether the key holds a `minimum` property, so each claim changes what fits next.
  public func reserves(_ rules: [String: SchedulerConfig.PropertyRule]) -> Bool {
    requirements.contains { rules[$0.name] == .minimum }
  }

  /// The amounts of `minimum` properties an action of this key holds while it runs.
  public func reservations(_ rules: [String: SchedulerConfig.PropertyRule]) -> [String: Double] {
    requirements.reduce(into: [:]) { out, r in
      if rules[r.name] == .minimum { out[r.name, default: 0] += Double(r.value) ?? 0 }
    }
  }
}
