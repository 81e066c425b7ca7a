import Foundation
import Testing

@testable import ApusConfig

@Suite("Configuration", .timeLimit(.minutes(3)))
struct ApusConfigurationTests {
  func parse(_ text: String, env: [String: String] = [:]) throws(ConfigError) -> ApusConfiguration {
    try ApusConfiguration.parse(Data(text.utf8), environment: env)
  }

  func error(_ text: String, env: [String: String] = [:]) -> String {
    do {
      _ = try parse(text, env: env)
      return "no error"
    } catch {
      return error.description
    }
  }

  @Test("${VAR} is expanded in string lists and objects too: run_as, hide_paths, platform, entrypoint, auth.admin")
  func expansionInCollections() throws {
    let text = #"""
      { workers: [{ scheduler: "grpc://a:1", cas: "grpc://a:1", work_directory: "/w", cache_directory: "/c",
          run_as: { user: "${RUN_AS:-apus-action}" }, hide_paths: ["${SECRETS}/key"],
          platform: { pool: "${POOL}" }, platform_commands: { cpu_count: ["${NPROC:-nproc}"] },
          entrypoint: ["${WRAPPER}"] }],
        auth: { admin: ["${OPS}"] } }
      """#
    let c = try parse(text, env: ["SECRETS": "/etc/apus", "POOL": "big", "WRAPPER": "/bin/env", "OPS": "ops"])
    let w = try #require(c.workers.first)
    #expect(w.runAs?.user == "apus-action")
    #expect(w.hidePaths == ["/etc/apus/key"])
    #expect(w.platform["pool"] == "big")
    #expect(w.platformCommands["cpu_count"] == ["nproc"])
    #expect(w.entrypoint == ["/bin/env"])
    #expect(c.auth?.admin == ["ops"])
    #expect(error(#"{ workers: [{ scheduler: "grpc://a:1", cas: "grpc://a:1", work_directory: "/w", cache_directory: "/c", hide_paths: ["${MISSING}"] }] }"#).hasPrefix("workers[0].hide_paths[0]:"))
  }
  let minimal = """
    {
      // JSON5: comments, trailing commas
      stores: { cas: { memory: { max_bytes: 1000 } }, ac: { memory: {} }, },
      servers: [ { listen: "127.0.0.1:0", instances: { "": { cas: "cas", action_cache: "ac" } } } ],
    }
    """

  @Test("a minimal JSON5 config")
  func minimalConfig() throws {
    let c = try parse(minimal)
    #expect(c.stores["cas"] == .memory(MemoryStoreSpec(maxBytes: 1000)))
    #expect(c.servers[0].instances[""] == InstanceConfig(cas: "cas", actionCache: "ac"))
    #expect(c.servers[0].maxMessageBytes == 4 * 1024 * 1024)
    #expect(c.global.shutdownGraceSeconds == 10)
  }

  @Test("global: log format and slow-request threshold, with their defaults")
  func global() throws {
    let servers = #"servers: [ { listen: "127.0.0.1:0", instances: { "": {} } } ]"#
    let defaults = try parse("{ \(servers) }").global
    #expect(defaults.logFormat == .text)
    #expect(defaults.slowRequestSeconds == 10)
    let set = try parse(
      #"{ global: { log_format: "json", slow_request_seconds: "0" }, "# + servers + " }"
    ).global
    #expect(set == GlobalConfig(logFormat: .json, slowRequestSeconds: 0))
  }

  @Test("environment variables with defaults")
  func environment() throws {
    let text = """
      { stores: { cas: { filesystem: { path: "${DATA}/cas", max_bytes: "${MAX:-2048}" } } },
        servers: [ { listen: "${HOST:-0.0.0.0}:${PORT}", instances: { "": { cas: "cas" } } } ] }
      """
    let c = try parse(text, env: ["DATA": "/srv", "PORT": "9092"])
    #expect(c.stores["cas"] == .filesystem(FilesystemStoreSpec(path: "/srv/cas", maxBytes: 2048)))
    #expect(c.servers[0].listen == "0.0.0.0:9092")
    #expect(error(text, env: ["DATA": "/srv"]).contains("servers[0].listen: environment variable PORT is not set"))
  }

  @Test("errors name the JSON path", arguments: [
    (#"{ servers: [ { listen: "a:1", instances: { "": {} }, tls: { certificate: "/c", private_key: "/k", client_auth: "require" } } ] }"#,
     "servers[0].tls.client_ca: is required with client_auth require"),
    (#"{ servers: [ { listen: "a:1", instances: { "": {} }, tls: { certificate: "/c", private_key: "/k", client_auth: "maybe" } } ] }"#,
     #"servers[0].tls.client_auth: expected one of none, optional, require, got "maybe""#),
    (#"{ stores: { cas: { filesystem: { path: "/x", max_bytes: "10G" } } }, servers: [] }"#,
     #"stores.cas.filesystem.max_bytes: expected a positive integer, got "10G""#),
    (#"{ stores: { cas: { memory: { max_bytes: -5 } } }, servers: [] }"#,
     "stores.cas.memory.max_bytes: expected a positive integer, got -5"),
    (#"{ stores: { cas: { memroy: {} } }, servers: [] }"#,
     "stores.cas.memroy: unknown key"),
    (#"{ stores: { cas: { memory: {}, filesystem: { path: "/x" } } }, servers: [] }"#,
     "stores.cas: expected an object with exactly one store kind"),
    (#"{ stores: {}, servers: [ { listen: "nohost", instances: { "": {} } } ] }"#,
     #"servers[0].listen: expected host:port, got "nohost""#),
    (#"{ stores: {}, servers: [ { listen: "a:1", instances: { "": { cas: "missing" } } } ] }"#,
     #"servers[0].instances."".cas: no store named "missing""#),
    (#"{ stores: {}, servers: [ { listen: "a:1", instances: { "x/blobs": {} } } ] }"#,
     #"reserved segment "blobs""#),
    (#"{ stores: {}, servers: [ { listen: "a:1", instances: { "": {} } } ], colour: 1 }"#,
     "colour: unknown key"),
    (#"{ stores: {}, servers: [] }"#, "servers: at least one server or worker is required"),
    (#"{ stores: {}, servers: [ { listen: "a:1", instances: { "": { execution: "x" } } } ] }"#,
     #"servers[0].instances."".execution: no scheduler named "x""#),
    (#"{ schedulers: { s: { platform_properties: { OSFamily: "equal" } } }, servers: [] }"#,
     #"schedulers.s.platform_properties.OSFamily: expected one of exact, minimum, priority, ignore"#),
    (#"{ workers: [ { scheduler: "http://x:1", cas: "grpc://x:1", work_directory: "/w", cache_directory: "/c" } ] }"#,
     #"workers[0].scheduler: expected grpc://host:port"#),
    (#"{ stores: {}, servers: [ { listen: 5, instances: { "": {} } } ] }"#,
     "servers[0].listen: expected a string"),
    (#"{ stores: { "#, "not valid JSON"),
    (#"{ stores: { v: { verify: { } } }, servers: [] }"#, "stores.v.verify.backend: is required"),
    (#"{ stores: { a: { ref: "b" }, b: { fast_slow: { fast: { memory: {} }, slow: { ref: "a" } } } }, servers: [] }"#,
     "stores.a: stores refer to each other in a cycle: a → b → a"),
    (#"{ stores: { a: { shard: { stores: [ { store: { ref: "zz" } } ] } } }, servers: [] }"#,
     #"stores.a.shard.stores[0].store.ref: no store named "zz""#),
    (#"{ stores: { g: { grpc: { url: "http://x:1" } } }, servers: [] }"#,
     #"stores.g.grpc.url: expected grpc://host:port"#),
    (#"{ stores: { s: { size_partitioning: { lower: { memory: {} }, upper: { memory: {} } } } }, servers: [] }"#,
     "stores.s.size_partitioning.threshold_bytes: is required"),
    (#"{ global: { log_level: "loud" }, servers: [] }"#, "global.log_level: expected one of"),
    (#"{ global: { log_format: "xml" }, servers: [] }"#,
     #"global.log_format: expected one of text, json, got "xml""#),
    (#"{ global: { log_format: 1 }, servers: [] }"#, "global.log_format: expected a string"),
    (#"{ global: { slow_request_seconds: -1 }, servers: [] }"#,
     "global.slow_request_seconds: expected a non-negative integer, got -1"),
  ])
  func errors(text: String, expected: String) {
    let message = error(text)
    #expect(message.contains(expected), "got: \(message)")
  }

  @Test("invalid UTF-8 is an error, not a crash (fuzzer finding)")
  func invalidUTF8() {
    let bytes = Array("// comment \u{80}x\n{ servers: [] }".utf8).map { $0 == 0x78 ? 0x80 : $0 }
    #expect(throws: ConfigError(path: "", "the config is not valid UTF-8")) {
      try ApusConfiguration.parse(Data(bytes), environment: [:])
    }
  }

  @Test("verify wraps a backend")
  func verify() throws {
    let c = try parse("""
      { stores: { cas: { verify: { backend: { memory: {} }, verify_hash: false } } },
        servers: [ { listen: "[::1]:50051", instances: { "": { cas: "cas" } } } ] }
      """)
    #expect(c.stores["cas"] == .verify(backend: .memory(MemoryStoreSpec()), verifyHash: false))
    #expect(ServerConfig.splitHostPort(c.servers[0].listen)! == ("::1", 50051))
  }

  @Test("the built-in default listens on 127.0.0.1:50051 under ~/.cache/apus")
  func builtIn() {
    let c = ApusConfiguration.builtInDefault(home: "/home/u")
    #expect(c.servers[0].listen == "127.0.0.1:50051")
    guard case .filesystem(let fs) = c.stores["cas"] else {
      Issue.record("cas is not a filesystem store")
      return
    }
    #expect(fs.path == "/home/u/.cache/apus/cas")
  }

  @Test("every file in configs/ loads")
  func shippedConfigs() throws {
    let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
      .appendingPathComponent("../../configs").standardized
    let files = try FileManager.default.contentsOfDirectory(atPath: dir.path)
      .filter { $0.hasSuffix(".json") || $0.hasSuffix(".json5") }
    #expect(!files.isEmpty)
    for file in files {
      let data = try Data(contentsOf: dir.appendingPathComponent(file))
      let env = ["HOME": "/home/u", "APUS_DATA": "/var/lib/apus"]
      do {
        let c = try ApusConfiguration.parse(data, environment: env)
        #expect(!c.servers.isEmpty || !c.workers.isEmpty, "\(file)")
      } catch {
        Issue.record("\(file): \(error)")
      }
    }
  }
}

@Suite("Environment expansion", .timeLimit(.minutes(3)))
struct EnvironmentExpansionTests {
  let e = EnvironmentExpansion(variables: ["A": "1", "EMPTY": ""])

  @Test("expansions", arguments: [
    ("plain", "plain"), ("${A}", "1"), ("x${A}y${A}", "x1y1"), ("${B:-two}", "two"),
    ("${EMPTY:-d}", "d"), ("$$A", "$A"), ("cost $5", "cost $5"), ("${A:-}", "1"),
  ])
  func expands(input: String, output: String) throws {
    #expect(try e.expand(input).get() == output)
  }

  @Test("failures", arguments: ["${B}", "${A", "${bad name}", "${}"])
  func fails(input: String) {
    #expect(throws: ConfigError.self) { try e.expand(input).get() }
  }
}
