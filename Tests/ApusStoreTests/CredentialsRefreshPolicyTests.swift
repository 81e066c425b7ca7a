import Testing

@testable import ApusStore

@Suite("Credentials refresh policy", .timeLimit(.minutes(1)))
struct CredentialsRefreshPolicyTests {
  static func keys(expiring: Int64?) -> AWSCredentials {
    AWSCredentials(accessKeyID: "a", secretAccessKey: "s", sessionToken: nil, expiration: expiring)
  }

  typealias Step = (elapsed: Int64, decision: CredentialsRefreshPolicy.Decision)
  static let sixHourSteps: [Step] = [
    (0, .use), (21_299, .use), (21_300, .renew), (21_589, .renew), (21_590, .fetch), (21_605, .fetch),
  ]
  static let shortSteps: [Step] = [(0, .use), (3, .use), (4, .renew), (5, .renew), (6, .fetch), (9, .fetch)]

  @Test("6-hour role keys: used until 5 minutes before expiry, renewed then, refetched in the last 10 s",
    arguments: sixHourSteps)
  func sixHours(elapsed: Int64, decision: CredentialsRefreshPolicy.Decision) {
    let policy = CredentialsRefreshPolicy()
    #expect(policy.decide(Self.keys(expiring: 1000 + 21_600), fetchedAt: 1000, now: 1000 + elapsed) == decision)
  }

  @Test("short-lived keys (a test stand-in's 8 s) are renewed halfway and refetched in the last quarter",
    arguments: shortSteps)
  func shortLived(elapsed: Int64, decision: CredentialsRefreshPolicy.Decision) {
    let policy = CredentialsRefreshPolicy()
    #expect(policy.decide(Self.keys(expiring: 108), fetchedAt: 100, now: 100 + elapsed) == decision)
  }

  @Test("nothing cached is a fetch; keys without expiration are used forever")
  func edges() {
    let policy = CredentialsRefreshPolicy()
    #expect(policy.decide(nil, fetchedAt: 0, now: 0) == .fetch)
    #expect(policy.decide(Self.keys(expiring: nil), fetchedAt: 0, now: 1 << 40) == .use)
    // Already expired when fetched (a clock far ahead of the service's): fetched again.
    #expect(policy.decide(Self.keys(expiring: 50), fetchedAt: 100, now: 100) == .fetch)
  }
}
