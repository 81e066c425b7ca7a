import Foundation
import Testing

@testable import ApusConfig

@Suite("Built-in default", .timeLimit(.minutes(3)))
struct DefaultConfigurationTests {
  @Test("configs/default.json decodes to exactly the built-in default")
  func fileMatchesBuiltIn() throws {
    let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
      .appendingPathComponent("../../configs/default.json").standardized
    let data = try Data(contentsOf: url)
    let fromFile = try ApusConfiguration.parse(data, environment: ["HOME": "/home/u"])
    let builtIn = ApusConfiguration.builtInDefault(home: "/home/u")
    // Field by field first, so a drift names the part that drifted.
    #expect(fromFile.stores == builtIn.stores)
    #expect(fromFile.schedulers == builtIn.schedulers)
    #expect(fromFile.servers == builtIn.servers)
    #expect(fromFile.workers == builtIn.workers)
    #expect(fromFile.global == builtIn.global)
    #expect(fromFile == builtIn)
  }
}
