import ApusConfig
import Foundation
import Testing

/// The `filesystem` store's keys decode with their defaults and reject unknown values.
@Suite("FilesystemStoreSpec", .timeLimit(.minutes(3)))
struct FilesystemStoreSpecTests {
  func decode(_ body: String) throws -> StoreSpec? {
    let text = #"""
      { stores: { cas: { filesystem: \#(body) } },
        servers: [ { listen: "127.0.0.1:1", instances: { "": { cas: "cas" } } } ] }
      """#
    return try ApusConfiguration.parse(Data(text.utf8), environment: [:]).stores["cas"]
  }

  @Test("defaults")
  func defaults() throws {
    let spec = try decode(#"{ path: "/x" }"#)
    #expect(spec == .filesystem(FilesystemStoreSpec(path: "/x")))
    guard case .filesystem(let f) = spec else { return }
    #expect(f.sync == .data && f.content == .auto && f.minFreeBytes == 0)
    #expect(!f.verifyOnStart && !f.verifyReads && f.maxBytes == nil)
  }

  @Test("every key")
  func everyKey() throws {
    let spec = try decode(
      #"{ path: "/x", max_bytes: 10, min_free_bytes: 0, sync: "full", content: "action_cache", verify_on_start: true, verify_reads: "true" }"#
    )
    #expect(
      spec
        == .filesystem(
          FilesystemStoreSpec(
            path: "/x", maxBytes: 10, minFreeBytes: 0, sync: .full, content: .actionCache,
            verifyOnStart: true, verifyReads: true)))
  }

  @Test(
    "bad values name the key",
    arguments: [
      (
        #"{ path: "/x", sync: "always" }"#,
        #"stores.cas.filesystem.sync: expected one of none, data, full, got "always""#
      ),
      (
        #"{ path: "/x", content: "ac" }"#,
        "stores.cas.filesystem.content: expected one of auto, cas, action_cache"
      ),
      (
        #"{ path: "/x", min_free_bytes: -1 }"#,
        "stores.cas.filesystem.min_free_bytes: expected a non-negative integer"
      ),
      (#"{ path: "/x", fsync: "data" }"#, "stores.cas.filesystem.fsync: unknown key"),
    ])
  func badValues(body: String, expected: String) {
    do {
      _ = try decode(body)
      Issue.record("no error for \(body)")
    } catch {
      #expect("\(error)".contains(expected), "got: \(error)")
    }
  }
}
