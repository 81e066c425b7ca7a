import ApusConfig
import Foundation
import Testing

/// `compression` / `compression_level` on the filesystem and s3 stores, and
/// `servers[].response_compression`: defaults, and errors that name the JSON path.
@Suite("compression config", .timeLimit(.minutes(3)))
struct CompressionConfigTests {
  func parse(store: String = #"{ filesystem: { path: "/x" } }"#, server: String = "") throws
    -> ApusConfiguration
  {
    let text = #"""
      { stores: { cas: \#(store) },
        servers: [ { listen: "127.0.0.1:1", instances: { "": { cas: "cas" } } \#(server) } ] }
      """#
    return try ApusConfiguration.parse(Data(text.utf8), environment: [:])
  }

  func expectError(_ expected: String, store: String = #"{ filesystem: { path: "/x" } }"#, server: String = "") {
    do {
      _ = try parse(store: store, server: server)
      Issue.record("no error, expected \(expected)")
    } catch {
      #expect("\(error)".contains(expected), "got: \(error)")
    }
  }

  @Test("stores default to none; zstd takes a level, 3 by default")
  func storeKeys() throws {
    guard case .filesystem(let plain) = try parse().stores["cas"] else { Issue.record("not filesystem"); return }
    #expect(plain.compression == .none)
    let zstd = try parse(store: #"{ filesystem: { path: "/x", compression: "zstd" } }"#)
    guard case .filesystem(let f) = zstd.stores["cas"] else { Issue.record("not filesystem"); return }
    #expect(f.compression == StoreCompression(algorithm: .zstd, level: 3))
    let level = try parse(store: #"{ filesystem: { path: "/x", compression: "zstd", compression_level: 19 } }"#)
    guard case .filesystem(let g) = level.stores["cas"] else { Issue.record("not filesystem"); return }
    #expect(g.compression.level == 19)
    let s3 = try parse(
      store: #"{ s3: { endpoint: "http://127.0.0.1:1", bucket: "b", compression: "zstd", compression_level: 1 } }"#)
    guard case .s3(let s) = s3.stores["cas"] else { Issue.record("not s3"); return }
    #expect(s.compression == StoreCompression(algorithm: .zstd, level: 1))
  }

  @Test("bad store values name the key")
  func storeErrors() {
    expectError(
      #"stores.cas.filesystem.compression: expected one of none, zstd, got "lz4""#,
      store: #"{ filesystem: { path: "/x", compression: "lz4" } }"#)
    expectError(
      "stores.cas.filesystem.compression_level: expected 1 to 19, got 22",
      store: #"{ filesystem: { path: "/x", compression: "zstd", compression_level: 22 } }"#)
    expectError(
      "stores.cas.filesystem.compression_level: expected a positive integer, got 0",
      store: #"{ filesystem: { path: "/x", compression: "zstd", compression_level: 0 } }"#)
    expectError(
      #"stores.cas.s3.compression_level: applies only with "compression": "zstd""#,
      store: #"{ s3: { endpoint: "http://127.0.0.1:1", bucket: "b", compression_level: 3 } }"#)
  }

  @Test("response compression: absent is off; the block has defaults")
  func responseKeys() throws {
    #expect(try parse().servers[0].responseCompression == nil)
    let on = try parse(server: ", response_compression: {}")
    #expect(on.servers[0].responseCompression == ResponseCompressionConfig(minBytes: 1024, encodings: [.zstd, .gzip]))
    let gzip = try parse(server: #", response_compression: { min_bytes: 0, encodings: ["gzip"] }"#)
    #expect(gzip.servers[0].responseCompression == ResponseCompressionConfig(minBytes: 0, encodings: [.gzip]))
  }

  @Test("bad response compression values name the key")
  func responseErrors() {
    expectError(
      #"servers[0].response_compression.encodings[1]: expected zstd or gzip, got "br""#,
      server: #", response_compression: { encodings: ["gzip", "br"] }"#)
    expectError(
      #"servers[0].response_compression.encodings[1]: "gzip" is listed twice"#,
      server: #", response_compression: { encodings: ["gzip", "gzip"] }"#)
    expectError(
      "servers[0].response_compression.encodings: must list at least one",
      server: #", response_compression: { encodings: [] }"#)
    expectError(
      "servers[0].response_compression.level: unknown key",
      server: #", response_compression: { level: 3 }"#)
  }
}
