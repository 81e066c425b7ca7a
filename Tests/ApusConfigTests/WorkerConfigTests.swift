import Foundation
import Testing

@testable import ApusConfig

@Suite("WorkerConfig")
struct WorkerConfigTests {
  func parse(_ scheduler: String) throws(ConfigError) -> WorkerConfig? {
    let text = #"{ workers: [{ scheduler: "# + scheduler + #", cas: "grpc://c:1", work_directory: "/w", cache_directory: "/c" }] }"#
    return try ApusConfiguration.parse(Data(text.utf8), environment: ["B": "grpc://b:2"]).workers.first
  }

  func error(_ scheduler: String) -> String {
    do {
      _ = try parse(scheduler)
      return "no error"
    } catch {
      return error.description
    }
  }

  @Test("scheduler takes one url or a list of them, ${VAR} expanded in each")
  func schedulerList() throws {
    #expect(try parse(#""grpc://a:1""#)?.schedulers == ["grpc://a:1"])
    #expect(try parse(#"["grpc://a:1", "${B}", "grpcs://[::1]:3"]"#)?.schedulers == ["grpc://a:1", "grpc://b:2", "grpcs://[::1]:3"])
    #expect(try parse(#"["grpc://a:1", "grpc://b:2"]"#)?.scheduler == "grpc://a:1, grpc://b:2")
  }

  @Test("a bad scheduler url is an error naming its place in the list")
  func schedulerErrors() {
    #expect(error(#"["grpc://a:1", "http://b:2"]"#).hasPrefix(#"workers[0].scheduler[1]: expected grpc://host:port or grpcs://host:port, got "http://b:2""#))
    #expect(error(#""grpc://a""#).hasPrefix("workers[0].scheduler: expected grpc://host:port"))
    #expect(error("[]").hasPrefix("workers[0].scheduler: expected at least one"))
    #expect(error("5").hasPrefix("workers[0].scheduler: expected a grpc(s):// url or a list of them"))
    #expect(error(#"["grpc://a:1", "${MISSING}"]"#).hasPrefix("workers[0].scheduler[1]:"))
  }
}
