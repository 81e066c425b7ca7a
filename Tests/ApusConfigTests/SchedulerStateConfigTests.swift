import Foundation
import Testing

@testable import ApusConfig

@Suite("Scheduler state config")
struct SchedulerStateConfigTests {
  func parse(_ state: String, env: [String: String] = [:]) throws(ConfigError) -> SchedulerStateConfig {
    let text = #"{ schedulers: { main: { state: "# + state + #" } }, "# + server + " }"
    return try ApusConfiguration.parse(Data(text.utf8), environment: env).schedulers["main"]!.state
  }

  let server = #"servers: [{ listen: "127.0.0.1:1", worker_api: "main", instances: {} }]"#

  func error(_ state: String) -> String {
    do {
      _ = try parse(state)
      return "no error"
    } catch {
      return error.description
    }
  }

  @Test("memory is the default and may be written out")
  func memory() throws {
    let c = try ApusConfiguration.parse(Data(("{ schedulers: { main: {} }, " + server + " }").utf8), environment: [:])
    #expect(c.schedulers["main"]?.state == .memory)
    #expect(try parse(#""memory""#) == .memory)
  }

  @Test("a postgres URL gives host, port, user, database and TLS mode; the password may come from the environment")
  func postgres() throws {
    let state = try parse(
      #"{ postgres: { url: "postgres://apus@db.example:6432/sched?sslmode=verify-full&sslrootcert=/etc/ca.pem", password: "${PGPASSWORD}", lease_seconds: 10 } }"#,
      env: ["PGPASSWORD": "p@ss/w"])
    guard case .postgres(let pg) = state else {
      Issue.record("expected postgres, got \(state)")
      return
    }
    #expect(pg.host == "db.example" && pg.port == 6432 && pg.user == "apus" && pg.database == "sched")
    #expect(pg.password == "p@ss/w")
    #expect(pg.sslMode == .verifyFull && pg.sslRootCertificate == "/etc/ca.pem")
    #expect(pg.leaseSeconds == 10 && pg.maxConnections == 10 && pg.queryTimeoutSeconds == 5)
    #expect(pg.pollIntervalMilliseconds == 1000)
    #expect(pg.displayName == "db.example:6432/sched")
  }

  @Test("percent-encoded passwords are decoded; defaults: port 5432, database = user, sslmode prefer")
  func defaults() throws {
    let pg = try PostgresStateConfig.parse("postgresql://bob:a%40b@localhost").get()
    #expect(pg.password == "a@b" && pg.port == 5432 && pg.database == "bob" && pg.sslMode == .prefer)
  }

  @Test("bad state values name their JSON path")
  func errors() {
    #expect(error(#""disk""#).hasPrefix("schedulers.main.state:"))
    #expect(error(#"{ postgres: {} }"#) == "schedulers.main.state.postgres.url: is required")
    #expect(error(#"{ postgres: { url: "mysql://a@b/c" } }"#).hasPrefix("schedulers.main.state.postgres.url: the scheme must be postgres"))
    #expect(error(#"{ postgres: { url: "postgres://a@b/c?sslmode=maybe" } }"#).contains("sslmode must be one of"))
    #expect(error(#"{ postgres: { url: "postgres://a@b/c?pool=3" } }"#).contains("unknown parameter \"pool\""))
    #expect(error(#"{ postgres: { url: "postgres://b/c" } }"#).contains("no user"))
    #expect(error(#"{ postgres: { url: "postgres://a@b/c", lease_seconds: 0 } }"#).hasPrefix("schedulers.main.state.postgres.lease_seconds:"))
    #expect(error(#"{ postgres: { url: "postgres://a@b/c", pool: 1 } }"#).hasPrefix("schedulers.main.state.postgres.pool: unknown key"))
    #expect(error(#"{ memory: {} }"#).hasPrefix("schedulers.main.state.memory:"))
  }
}
