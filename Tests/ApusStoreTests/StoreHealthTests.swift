import ApusTestSupport
import ApusConfig
import Foundation
import Testing

@testable import ApusStore

@Suite("Store health", .timeLimit(.minutes(1)))
struct StoreHealthTests {
  /// A factory over `stores` (JSON5 of the `stores` block), built.
  func factory(_ stores: String) async throws -> StoreFactory {
    let config = try ApusConfiguration.parse(
      Data(
        (#"{ stores: "# + stores + #", servers: [ { listen: "127.0.0.1:0", instances: { "": {} } } ] }"#).utf8),
      environment: [:])
    let factory = StoreFactory(specs: config.stores, home: "/h", metrics: RecordingMetrics())
    _ = try await factory.makeAll()
    return factory
  }

  static func s3(_ port: Int) -> String {
    #"{ s3: { endpoint: "http://127.0.0.1:\#(port)", bucket: "b", access_key_id: "k", secret_access_key: "s", path_style: true, max_attempts: 1 } }"#
  }

  /// A port nothing listens on: bound, then closed.
  static func closedPort() throws -> Int {
    try SilentListener().port
  }

  @Test("local stores are ok; a store needing an unreachable s3 or grpc backend is unavailable")
  func states() async throws {
    let port = try Self.closedPort()
    let factory = try await factory(
      #"""
      { mem: { memory: {} },
        bucket: \#(Self.s3(port)),
        tiered: { fast_slow: { fast: { memory: {} }, slow: \#(Self.s3(port)) } },
        both: { shard: { stores: [ { store: { memory: {} } }, { store: \#(Self.s3(port)) } ] } },
        remote: { grpc: { url: "grpc://127.0.0.1:\#(port)" } },
        over_ref: { fast_slow: { fast: { ref: "bucket" }, slow: { memory: {} } } } }
      """#)
    let health = await factory.health()
    #expect(health["mem"] == .ok)
    let backend = "s3 http://127.0.0.1:\(port)/b"
    #expect(health["bucket"]?.state == .unavailable)
    #expect(health["bucket"]?.reason?.hasPrefix(backend) == true, "\(String(describing: health["bucket"]))")
    #expect(health["tiered"]?.state == .degraded)
    #expect(health["tiered"]?.reason?.hasPrefix("slow tier unavailable (\(backend)") == true)
    #expect(health["tiered"]?.reason?.hasSuffix("serving from the fast tier") == true)
    #expect(health["both"]?.state == .unavailable)
    #expect(health["remote"]?.state == .unavailable)
    #expect(health["remote"]?.reason?.hasPrefix("grpc grpc://127.0.0.1:\(port)") == true)
    // An unreachable fast tier is not excused.
    #expect(health["over_ref"]?.state == .unavailable)
    await factory.close()
  }

  @Test("a backend that accepts connections and never answers is unavailable within the probe bound, and cached")
  func silentBackend() async throws {
    let silent = try SilentListener()
    let factory = try await factory("{ bucket: \(Self.s3(silent.port)) }")
    let clock = ContinuousClock()
    var health: [String: StoreHealth] = [:]
    let first = await clock.measure { health = await factory.health() }
    #expect(health["bucket"]?.state == .unavailable)
    // 2 s bound; generous for a loaded CI machine, well under the S3 client's own 10 s timeouts.
    #expect(first < .seconds(8), "took \(first)")
    let second = await clock.measure { health = await factory.health() }
    #expect(health["bucket"]?.state == .unavailable)
    #expect(second < .milliseconds(200), "a probe within 5 s should be answered from the cache; took \(second)")
    await factory.close()
  }
}
