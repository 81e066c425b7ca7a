import ApusConfig
import ApusProto

/// The properties of an action that restrict where it runs (its `exact` and `minimum`
/// ones), sorted: actions with equal keys can run on exactly the same workers, so they
/// share one lane of the queue.
struct PlatformKey: Hashable, Sendable {
  struct Requirement: Hashable, Sendable, Comparable {
    let name: String
    let value: String
    static func < (a: Requirement, b: Requirement) -> Bool { (a.name, a.value) < (b.name, b.value) }
  }

  let requirements: [Requirement]
  /// The same as platform properties, for the matcher (made once: matching is per event).
  let properties: [Platform.Property]

  init(_ platform: [Platform.Property], rules: [String: SchedulerConfig.PropertyRule]) {
    requirements = platform.compactMap { p in
      switch rules[p.name] {
      case .exact, .minimum: Requirement(name: p.name, value: p.value)
      case .priority, .ignore, nil: nil
      }
    }.sorted()
    properties = requirements.map { var p = Platform.Property(); p.name = $0.name; p.value = $0.value; return p }
  }

  static func == (a: PlatformKey, b: PlatformKey) -> Bool { a.requirements == b.requirements }
  func hash(into hasher: inout Hasher) { hasher.combine(requirements) }
}
