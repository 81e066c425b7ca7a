import ApusConfig
import ApusServices
import Foundation
import Logging
import NIOHTTP1
import Testing

@testable import ApusAdmin

@Suite("Admin endpoints")
struct AdminEndpointsTests {
  static let config = ApusConfiguration(
    stores: ["cas": .memory(MemoryStoreSpec())],
    servers: [ServerConfig(listen: "127.0.0.1:0", instances: ["": InstanceConfig(cas: "cas", actionCache: nil)])])

  func endpoints(auth: AuthConfig? = nil, anonymousRead: Bool = false) async throws -> AdminEndpoints {
    var config = Self.config
    config.auth = auth
    var authorizer: Authorizer?
    if let auth { authorizer = try await Authorizer(config: auth, logger: Logger(label: "test")) }
    return AdminEndpoints(
      targets: AdminTargets(config: config, server: nil, workers: []), authorizer: authorizer,
      anonymousRead: anonymousRead, version: "9.9.9", logger: Logger(label: "test"))
  }

  func get(_ e: AdminEndpoints, _ path: String, method: HTTPMethod = .GET, token: String? = nil) async -> AdminResponse {
    await e.respond(.init(method: method, path: path, authorization: token.map { "Bearer \($0)" }, clientCertificate: nil, peer: "test"))
  }

  func json(_ r: AdminResponse) throws -> [String: Any] {
    try #require(try JSONSerialization.jsonObject(with: Data(r.body)) as? [String: Any])
  }

  @Test("healthz, unknown paths and wrong methods answer with JSON")
  func basics() async throws {
    let e = try await endpoints()
    let health = await get(e, "/healthz")
    #expect(health.status == .ok && health.contentType == "application/json")
    #expect(try json(health)["status"] as? String == "ok")
    let missing = await get(e, "/nope")
    #expect(missing.status == .notFound)
    #expect(try json(missing)["error"] as? String == "no endpoint /nope")
    #expect(await get(e, "/drain").status == .methodNotAllowed)
    #expect(await get(e, "/status", method: .POST).status == .methodNotAllowed)
    let page = await get(e, "/")
    #expect(page.status == .ok && page.contentType.hasPrefix("text/html"))
  }

  @Test("drain turns readyz to 503 with draining true")
  func drain() async throws {
    let e = try await endpoints()
    let before = await get(e, "/readyz")
    #expect(before.status == .ok)
    #expect(try json(before)["ready"] as? Bool == true)
    #expect(await get(e, "/drain", method: .POST).status == .accepted)
    let after = await get(e, "/readyz")
    #expect(after.status == .serviceUnavailable)
    #expect(try json(after)["draining"] as? Bool == true)
    #expect(try json(after)["ready"] as? Bool == false)
  }

  @Test("status: schema version 1, version, roles")
  func status() async throws {
    let e = try await endpoints()
    let feed = try json(await get(e, "/status"))
    #expect(feed["schema_version"] as? Int == 1)
    #expect(feed["version"] as? String == "9.9.9")
    #expect(feed["roles"] as? [String] == ["cas"])
    #expect(feed["schedulers"] as? [String: Any] != nil)
    #expect(feed["recent_errors"] as? [Any] != nil)
  }

  @Test("with auth: metrics and status need admin, health does not; anonymous_read opens reads only")
  func access() async throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("apus-admin-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    let tokens = dir.appendingPathComponent("tokens").path
    try (TokenFile.line(token: "root-token", principal: "root") + "\n" + TokenFile.line(token: "dev-token", principal: "dev") + "\n")
      .write(toFile: tokens, atomically: true, encoding: .utf8)
    let auth = AuthConfig(tokens: tokens, admin: ["root"])
    let e = try await endpoints(auth: auth)
    #expect(await get(e, "/healthz").status == .ok)
    #expect(await get(e, "/readyz").status == .ok)
    #expect(await get(e, "/").status == .ok)
    #expect(await get(e, "/status").status == .unauthorized)
    #expect(await get(e, "/metrics", token: "wrong").status == .unauthorized)
    let forbidden = await get(e, "/status", token: "dev-token")
    #expect(forbidden.status == .forbidden)
    #expect(try json(forbidden)["error"] as? String ?? "" != "")
    #expect(await get(e, "/status", token: "root-token").status == .ok)
    #expect(await get(e, "/drain", method: .POST, token: "dev-token").status == .forbidden)

    let open = try await endpoints(auth: auth, anonymousRead: true)
    #expect(await get(open, "/metrics").status == .ok)
    #expect(await get(open, "/drain", method: .POST).status == .unauthorized)
  }
}
