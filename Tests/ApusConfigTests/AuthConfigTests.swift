import Foundation
import Testing

@testable import ApusConfig

@Suite("auth config", .timeLimit(.minutes(3)))
struct AuthConfigTests {
  func parse(_ auth: String) throws(ConfigError) -> ApusConfiguration {
    try ApusConfiguration.parse(
      Data(
        """
        { schedulers: { main: {} }, stores: { m: { memory: {} } },
          servers: [ { listen: "127.0.0.1:0", instances: { "": { cas: "m", action_cache: "m" } } } ],
          auth: \(auth) }
        """.utf8), environment: [:])
  }

  @Test("keys, defaults and grants")
  func decode() throws {
    let auth = try #require(
      try parse(
        #"""
        { tokens: "/etc/apus/tokens", certificate_principal: "san",
          instances: { "*": { ci: ["read", "write", "write_ac"], anonymous: ["read"] },
                       "team/a": { dev: ["write"] } },
          schedulers: { main: { "worker-1": ["worker"] } }, admin: ["ops"] }
        """#
      ).auth)
    #expect(auth.tokens == "/etc/apus/tokens")
    #expect(auth.certificatePrincipal == .san)
    #expect(auth.admin == ["ops"])
    #expect(auth.permissions(of: "ci", instance: "") == [.read, .write, .writeAC])
    #expect(auth.permissions(of: nil, instance: "team/a") == [.read])
    // Instance entries add to `*`; anonymous grants reach everyone.
    #expect(auth.permissions(of: "dev", instance: "team/a") == [.read, .write])
    #expect(auth.permissions(of: "dev", instance: "") == [.read])
    #expect(auth.permissions(of: "worker-1", scheduler: "main") == [.worker])
    #expect(auth.permissions(of: "ci", scheduler: "main") == [])
    #expect(try parse("{}").auth?.certificatePrincipal == .cn)
  }

  @Test(
    "errors name the JSON path",
    arguments: [
      (#"{ instances: { "*": { ci: ["read", "fly"] } } }"#,
       #"auth.instances."*"."ci"[1]: expected one of read, write, write_ac, execute, got "fly""#),
      (#"{ instances: { "": { ci: ["worker"] } } }"#, #"auth.instances.""."ci"[0]: expected one of"#),
      (#"{ schedulers: { main: { w: ["read"] } } }"#, #"auth.schedulers."main"."w"[0]: expected one of worker"#),
      (#"{ schedulers: { other: { w: ["worker"] } } }"#, #"auth.schedulers."other": no scheduler named "other""#),
      (#"{ certificate_principal: "email" }"#, #"auth.certificate_principal: expected one of cn, san, got "email""#),
      (#"{ colour: 1 }"#, "auth.colour: unknown key"),
    ])
  func errors(text: String, expected: String) {
    let message: String
    do {
      _ = try parse(text)
      message = "no error"
    } catch {
      message = error.description
    }
    #expect(message.contains(expected), "got: \(message)")
  }

  @Test("workers and grpc stores take a token_file")
  func tokenFiles() throws {
    let c = try ApusConfiguration.parse(
      Data(
        #"""
        { stores: { g: { grpc: { url: "grpc://h:1", token_file: "/t/store" } } },
          workers: [ { scheduler: "grpc://h:1", cas: "grpc://h:1", work_directory: "/w",
                       cache_directory: "/c", token_file: "~/t" } ] }
        """#.utf8), environment: [:])
    guard case .grpc(let g) = c.stores["g"] else { Issue.record("not grpc"); return }
    #expect(g.tokenFile == "/t/store")
    #expect(c.workers[0].expandingTilde(home: "/home/u").tokenFile == "/home/u/t")
  }
}
