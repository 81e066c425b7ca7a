import ApusConfig
import Foundation
import Testing

@testable import ApusWorker

@Suite("WorkerCredentials")
struct WorkerCredentialsTests {
  let scratch = temporaryDirectory()

  func config(token: String) -> WorkerConfig {
    WorkerConfig(
      scheduler: "grpc://127.0.0.1:1", cas: "grpc://127.0.0.1:1", workDirectory: "\(scratch)/w",
      cacheDirectory: "\(scratch)/c", tokenFile: token)
  }

  func bearer(_ credentials: WorkerCredentials) -> String? {
    credentials.options(for: "grpc://127.0.0.1:1").callMetadata.first { $0.0 == "authorization" }?.1
  }

  @Test("the token file is read again when it changes or on a forced reload; a broken one keeps the old token")
  func tokenReload() throws {
    let path = "\(scratch)/token"
    try "first\n".write(toFile: path, atomically: true, encoding: .utf8)
    let credentials = try WorkerCredentials(config(token: path))
    #expect(bearer(credentials) == "Bearer first")
    #expect(try credentials.reload(force: false) == false)  // unchanged
    #expect(try credentials.reload(force: true))

    try "second\n".write(toFile: path, atomically: true, encoding: .utf8)  // a rename: new inode
    #expect(try credentials.reload(force: false))
    #expect(bearer(credentials) == "Bearer second")

    try "two words\n".write(toFile: path, atomically: true, encoding: .utf8)
    #expect(throws: (any Error).self) { try credentials.reload(force: false) }
    #expect(try credentials.reload(force: false) == false)  // the same error is reported once
    #expect(bearer(credentials) == "Bearer second")
  }

  @Test("plaintext URLs get no TLS context; a grpcs endpoint of a host name checks the certificate against the name")
  func tls() throws {
    let plain = try WorkerCredentials(config(token: "\(scratch)/none").withoutToken)
    #expect(plain.options(for: "grpc://127.0.0.1:1").clientTLS == nil)
    var secure = config(token: "").withoutToken
    secure.schedulers = ["grpcs://sched.example:443"]
    let credentials = try WorkerCredentials(secure)
    #expect(credentials.options(for: "grpcs://sched.example:443", serverName: "sched.example").clientTLS?.serverName == "sched.example")
    #expect(credentials.options(for: "grpc://127.0.0.1:1").clientTLS == nil)
    #expect(credentials.options(for: "grpc://127.0.0.1:1").callMetadata.isEmpty)
  }
}

extension WorkerConfig {
  fileprivate var withoutToken: WorkerConfig {
    var copy = self
    copy.tokenFile = nil
    return copy
  }
}
