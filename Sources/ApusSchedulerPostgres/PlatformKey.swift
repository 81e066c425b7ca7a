import ApusConfig
import ApusProto
import ApusScheduler

/// The queue an action waits in: its platform properties that restrict matching (`exact`
/// and `minimum` rules), sorted, as one string. Workers claim from the keys they satisfy, so
/// the database never evaluates matching rules and one index serves every platform.
public struct PlatformKey: Hashable, Sendable, CustomStringConvertible {
  public let rawValue: String
  /// The properties the key stands for (only the ones that restrict matching).
  public let properties: [Platform.Property]

  public init(_ platform: [Platform.Property], rules: [String: SchedulerConfig.PropertyRule]) {
    let relevant = platform.filter { rules[$0.name] == .exact || rules[$0.name] == .minimum }
      .sorted { ($0.name, $0.value) < ($1.name, $1.value) }
    properties = relevant
    rawValue = relevant.map { "\($0.name)=\($0.value)" }.joined(separator: "\n")
  }

  public static func == (a: PlatformKey, b: PlatformKey) -> Bool { a.rawValue == b.rawValue }
  public func hash(into hasher: inout Hasher) { hasher.combine(rawValue) }

  public var description: String { rawValue.isEmpty ? "none" : rawValue.replacingOccurrences(of: "\n", with: ",") }

  /// Whether a worker offering `offered`, with `reserved` amounts of `minimum` properties
  /// held by its running actions, can take one more action of this key.
  public func isSatisfied(
    by offered: [String: [String]], reserved: [String: Double], rules: [String: SchedulerConfig.PropertyRule]
  ) -> Bool {
    PlatformMatcher.matches(properties, offered: offered, reserved: reserved, rules: rules)
  }

  /// Whether the key holds a `minimum` property, so each claim changes what fits next.
  public func reserves(_ rules: [String: SchedulerConfig.PropertyRule]) -> Bool {
    properties.contains { rules[$0.name] == .minimum }
  }

  /// The amounts of `minimum` properties an action of this key holds while it runs.
  public func reservations(_ rules: [String: SchedulerConfig.PropertyRule]) -> [String: Double] {
    properties.reduce(into: [:]) { out, p in
      if rules[p.name] == .minimum { out[p.name, default: 0] += Double(p.value) ?? 0 }
    }
  }
}
