import ApusConfig
import ApusRPC
import ApusTestSupport
import Foundation
import Logging
import Testing

@testable import ApusServices

@Suite("authentication and authorization", .timeLimit(.minutes(3)))
struct AuthorizerTests {
  static let ciToken = "ci-secret-token"
  static let devToken = "dev-secret-token"

  @Test("token file: comments, blank lines, hashes in either case")
  func parse() throws {
    let text = """
      # tokens
      \(TokenFile.line(token: Self.ciToken, principal: "ci"))

      \(TokenFile.line(token: Self.devToken, principal: "dev").uppercased().dropLast(3))dev  # trailing
      """
    let file = try TokenFile(parsing: text)
    #expect(file.entries.map(\.principal) == ["ci", "dev"])
    #expect(file.principal(for: Self.ciToken) == "ci")
    #expect(file.principal(for: Self.devToken) == "dev")
    #expect(file.principal(for: "nope") == nil)
  }

  @Test(
    "token file: bad lines are errors naming the line",
    arguments: [
      ("# ok\nabc ci\n", "line 2: the hash is not 64 hex digits"),
      ("\n\n\(String(repeating: "a", count: 64))\n", "line 3: expected"),
      ("\(String(repeating: "a", count: 64)) ci extra\n", "line 1: expected"),
      ("\(String(repeating: "g", count: 64)) ci\n", "line 1: the hash is not 64 hex digits"),
      ("\(String(repeating: "a", count: 64)) anonymous\n", "line 1: \"anonymous\""),
    ])
  func parseErrors(text: String, expected: String) {
    do {
      _ = try TokenFile(parsing: text)
      Issue.record("no error")
    } catch {
      #expect(error.description.hasPrefix(expected), "got: \(error)")
    }
  }

  @Test("constant-time comparison")
  func constantTime() {
    #expect(ConstantTime.equal([1, 2, 3], [1, 2, 3]))
    #expect(!ConstantTime.equal([1, 2, 3], [1, 2, 4]))
    #expect(!ConstantTime.equal([1, 2, 3], [1, 2]))
    #expect(ConstantTime.equal([], []))
  }

  func tokenFile(_ lines: [String]) throws -> String {
    let path = temporaryDirectory("apus-tokens") + "/tokens"
    try lines.joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
    return path
  }

  func authorizer(_ path: String?, jwt: JWTConfig? = nil) async throws -> Authorizer {
    try await Authorizer(
      config: AuthConfig(
        tokens: path, jwt: jwt,
        instances: [
          "*": ["ci": [.read, .write, .writeAC, .execute], "dev": [.read], "anonymous": []],
          "team": ["dev": [.write]],
        ],
        schedulers: ["main": ["ci": [.worker]]], admin: ["ops"]),
      logger: Logger(label: "test"))
  }

  func context(_ authorization: String? = nil, certificate: ClientCertificateNames? = nil) -> ServerContext {
    ServerContext(
      path: "/x", metadata: Metadata(authorization.map { [("authorization", $0)] } ?? []), deadline: nil,
      peer: "test", clientCertificate: certificate)
  }

  func code(_ body: () async throws -> Void) async -> RPCStatusCode? {
    do {
      try await body()
      return nil
    } catch let error as RPCError {
      return error.code
    } catch {
      return .unknown
    }
  }

  @Test("principals, refusals and their messages")
  func policy() async throws {
    let path = try tokenFile([
      TokenFile.line(token: Self.ciToken, principal: "ci"), TokenFile.line(token: Self.devToken, principal: "dev"),
    ])
    let auth = try await authorizer(path)
    #expect(try await auth.authenticate(context("Bearer \(Self.ciToken)")) == "ci")
    #expect(try await auth.authenticate(context("bearer \(Self.devToken)")) == "dev")
    #expect(try await auth.authenticate(context()) == nil)
    #expect(await code { _ = try await auth.authenticate(context("Bearer wrong")) } == .unauthenticated)
    #expect(await code { _ = try await auth.authenticate(context("Basic abc")) } == .unauthenticated)
    do {
      _ = try await auth.authenticate(context("Bearer wrong-secret"))
    } catch {
      #expect(!"\(error)".contains("wrong-secret"))
    }
    #expect(await code { try auth.authorize("ci", .writeAC, instance: "") } == nil)
    #expect(await code { try auth.authorize(nil, .read, instance: "") } == .unauthenticated)
    #expect(await code { try auth.authorize("dev", .write, instance: "team") } == nil)
    do {
      try auth.authorize("dev", .writeAC, instance: "")
      Issue.record("allowed")
    } catch let error as RPCError {
      #expect(error.code == .permissionDenied)
      #expect(error.message == #"principal "dev" lacks "write_ac" on instance """#)
    }
    #expect(await code { try auth.authorize("ci", scheduler: "main") } == nil)
    #expect(await code { try auth.authorize("dev", scheduler: "main") } == .permissionDenied)
    #expect(await code { try auth.authorize("dev", .execute, anyOf: ["*", "team"]) } == .permissionDenied)
    #expect(await code { try auth.authorize("ci", .execute, anyOf: ["*", "team"]) } == nil)
    #expect(await code { try auth.authorizeAdmin("ops") } == nil)
    #expect(await code { try auth.authorizeAdmin("ci") } == .permissionDenied)
    #expect(await code { try auth.authorizeAdmin(nil) } == .unauthenticated)
  }

  @Test("client certificates name principals by CN or SAN")
  func certificates() async throws {
    let cert = ClientCertificateNames(commonName: "ci", dnsNames: ["dev"], uris: ["spiffe://x"])
    #expect(try await authorizer(nil).authenticate(context(certificate: cert)) == "ci")
    var config = AuthConfig(certificatePrincipal: .san)
    var auth = try await Authorizer(config: config, logger: Logger(label: "test"))
    #expect(try await auth.authenticate(context(certificate: cert)) == "dev")
    #expect(try await auth.authenticate(context(certificate: .init(uris: ["spiffe://x"]))) == "spiffe://x")
    config.certificatePrincipal = .cn
    auth = try await Authorizer(config: config, logger: Logger(label: "test"))
    #expect(await code { _ = try await auth.authenticate(context(certificate: .init(dnsNames: ["a"]))) } == .unauthenticated)
  }

  @Test("the token file is read again when it changes; unreadable at start is a config error")
  func reload() async throws {
    let path = try tokenFile([TokenFile.line(token: Self.ciToken, principal: "ci")])
    let auth = try await authorizer(path)
    #expect(try await auth.authenticate(context("Bearer \(Self.ciToken)")) == "ci")
    try [TokenFile.line(token: Self.devToken, principal: "dev"), "# ci revoked"].joined(separator: "\n")
      .write(toFile: path, atomically: true, encoding: .utf8)
    try await Task.sleep(for: .milliseconds(1100))
    #expect(try await auth.authenticate(context("Bearer \(Self.devToken)")) == "dev")
    #expect(await code { _ = try await auth.authenticate(context("Bearer \(Self.ciToken)")) } == .unauthenticated)
    // A broken edit keeps the previous tokens.
    try "not a token line".write(toFile: path, atomically: true, encoding: .utf8)
    try await Task.sleep(for: .milliseconds(1100))
    #expect(try await auth.authenticate(context("Bearer \(Self.devToken)")) == "dev")
    await #expect(throws: ConfigError.self) { try await authorizer("/nonexistent/tokens") }
  }

  @Test("every REAPI method has a permission")
  func methods() {
    var table = InstanceTable(instances: [:], maxMessageBytes: 1 << 20)
    table.authorizer = nil
    let paths = RemoteExecutionAPI.router(for: table).paths
    for path in paths { #expect(MethodPermissions.table[path] != nil, "\(path)") }
    #expect(MethodPermissions.table["/build.bazel.remote.execution.v2.ActionCache/UpdateActionResult"] == .writeAC)
  }
}
