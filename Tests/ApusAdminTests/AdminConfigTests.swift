import ApusConfig
import Foundation
import Testing

@Suite struct AdminConfigTests {
  @Test func defaultsAndErrors() throws {
    let c = try ApusConfiguration.parse(Data(#"{"servers": [{"listen": "127.0.0.1:0", "instances": {"": {}}}], "admin": {}}"#.utf8))
    #expect(c.admin == AdminConfig(listen: "127.0.0.1:9090"))
    #expect(throws: ConfigError.self) {
      try ApusConfiguration.parse(Data(#"{"servers": [{"listen": "127.0.0.1:0", "instances": {"": {}}}], "admin": {"listen": "nope"}}"#.utf8))
    }
  }
}
