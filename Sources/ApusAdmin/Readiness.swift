import ApusStore

/// The body of `/readyz` (docs/operations.md): what keeps this process from taking traffic,
/// and what works but in a reduced way.
struct Readiness: Encodable, Sendable {
  struct Finding: Encodable, Sendable, Equatable {
    var component: String
    var reason: String
  }

  var ready: Bool
  var draining: Bool
  var notReady: [Finding]
  var degraded: [Finding]

  enum CodingKeys: String, CodingKey {
    case ready, draining
    case notReady = "not_ready"
    case degraded
  }

  init(draining: Bool, notReady: [Finding], degraded: [Finding]) {
    self.draining = draining
    self.notReady = notReady
    self.degraded = degraded
    self.ready = !draining && notReady.isEmpty
  }
}
