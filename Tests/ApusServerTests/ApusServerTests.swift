import ApusTestSupport
import ApusConfig
import ApusProto
import ApusRPC
import ApusServer
import ApusStore
import Foundation
import Logging
import NIOCore
import ServiceLifecycle
import ServiceLifecycleTestKit
import Synchronization
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// The whole server in-process: roles wired from a config, listeners on port 0, shutdown order.
@Suite("ApusServer", .timeLimit(.minutes(3)))
struct ApusServerTests {
  /// Cache + execution + worker API on one listener, a cache-only instance on another.
  static func config(graceSeconds: Int = 10) -> ApusConfiguration {
    ApusConfiguration(
      stores: ["cas": .memory(MemoryStoreSpec()), "ac": .memory(MemoryStoreSpec())],
      schedulers: ["main": SchedulerConfig()],
      servers: [
        ServerConfig(
          listen: "127.0.0.1:0",
          instances: ["": InstanceConfig(cas: "cas", actionCache: "ac", execution: "main")],
          workerAPI: "main"),
        ServerConfig(
          listen: "127.0.0.1:0", instances: ["cache": InstanceConfig(cas: "cas", actionCache: "ac")]),
      ],
      global: GlobalConfig(shutdownGraceSeconds: graceSeconds))
  }

  static func capabilities(_ client: GRPCClient, instance: String) async throws -> ServerCapabilities {
    var request = GetCapabilitiesRequest()
    request.instanceName = instance
    let bytes = try await client.unary(
      "/build.bazel.remote.execution.v2.Capabilities/GetCapabilities", request.serializedBytes())
    return try ServerCapabilities(serializedBytes: bytes)
  }

  /// Whether a plain TCP connect to the loopback `port` is refused.
  static func connectionRefused(port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let refused = withUnsafePointer(to: &address) { pointer in
      pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) != 0 && errno == ECONNREFUSED
      }
    }
    return refused
  }

  @Test("a config with cache, scheduler and worker API starts every role on its listener")
  func roleWiring() async throws {
    let server = ApusServer(config: Self.config(), home: "/nonexistent", logger: Logger(label: "test"))
    try await testGracefulShutdown { trigger in
      try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await server.run() }
        let addresses = await server.waitUntilListening()
        try #require(addresses.count == 2)
        let ports = addresses.compactMap(\.port)
        #expect(ports.count == 2 && ports.allSatisfy { $0 > 0 } && ports[0] != ports[1])

        let main = GRPCClient(host: "127.0.0.1", port: ports[0])
        let cacheOnly = GRPCClient(host: "127.0.0.1", port: ports[1])
        let full = try await Self.capabilities(main, instance: "")
        #expect(full.cacheCapabilities != nil)
        #expect(full.executionCapabilities != nil)
        let cache = try await Self.capabilities(cacheOnly, instance: "cache")
        #expect(cache.cacheCapabilities != nil)
        #expect(cache.executionCapabilities == nil)

        // The worker API is served only where the config asks for it.
        var hello = WorkerMessage()
        hello.register = WorkerRegister()
        hello.register?.workerID = "probe"
        let registered = try await main.call("/apus.worker.v1.WorkerAPI/Connect")
        try await registered.requests.write(hello.serializedBytes())
        var replies = registered.responses.makeAsyncIterator()
        let first = try #require(try await replies.next())
        #expect(try SchedulerMessage(serializedBytes: first).registered != nil)
        registered.cancelCall()
        await #expect(throws: RPCError.self) {
          _ = try await cacheOnly.unary("/apus.worker.v1.WorkerAPI/Connect", hello.serializedBytes())
        }

        await main.close()
        await cacheOnly.close()
        trigger.triggerGracefulShutdown()
        try await group.next()
      }
    }
  }

  @Test("on shutdown new connections are refused, an in-flight call finishes, and run() returns")
  func shutdownOrder() async throws {
    let server = ApusServer(
      config: Self.config(graceSeconds: 90), home: "/nonexistent", logger: Logger(label: "test"))
    let content = [UInt8](repeating: 0x61, count: 64 << 10)
    let digest = SHA256Hasher.digest(of: content)
    try await testGracefulShutdown { trigger in
      try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await server.run() }
        let addresses = await server.waitUntilListening()
        let port = try #require(addresses.first?.port)
        let client = GRPCClient(host: "127.0.0.1", port: port)

        // An upload is half sent when shutdown starts.
        let upload = try await client.call("/google.bytestream.ByteStream/Write")
        var head = WriteRequest()
        head.resourceName = "uploads/1/blobs/\(digest.hashHex)/\(digest.sizeBytes)"
        head.data = content[..<(32 << 10)]
        try await upload.requests.write(head.serializedBytes())
        // The call has reached the server once another call on the connection round-trips.
        _ = try await Self.capabilities(client, instance: "")

        let shutdownStarted = ContinuousClock.now
        trigger.triggerGracefulShutdown()
        #expect(await eventually { Self.connectionRefused(port: port) }, "the listener still accepts")

        var tail = WriteRequest()
        tail.writeOffset = Int64(head.data.count)
        tail.data = content[(32 << 10)...]
        tail.finishWrite = true
        try await upload.requests.write(tail.serializedBytes())
        upload.finishRequests()
        let reply = try WriteResponse(serializedBytes: try await upload.responses.single())
        #expect(reply.committedSize == Int64(content.count))

        // With nothing left in flight, run() returns well before the 90 s grace ends: the
        // tick and upkeep loops stopped and the stores were closed.
        try await group.next()
        #expect(ContinuousClock.now - shutdownStarted < .seconds(60))
        await client.close()
      }
    }
  }

  @Test("a listener that cannot bind fails run() and does not leave waiters hanging")
  func bindFailure() async throws {
    var config = Self.config()
    config.servers[1].listen = "203.0.113.1:0"  // TEST-NET-3: not an address of this host
    let server = ApusServer(config: config, home: "/nonexistent", logger: Logger(label: "test"))
    try await withThrowingTaskGroup(of: [SocketAddress].self) { group in
      group.addTask { await server.waitUntilListening() }
      await #expect(throws: (any Error).self) { try await server.run() }
      let bound = try await group.next()
      #expect(bound?.count == 1, "only the first listener was bound")
    }
  }
}

@Suite("Store upkeep", .timeLimit(.minutes(3)))
struct StoreMaintenanceTests {
  @Test("runs at start and every period, survives a failed run, and stops when cancelled")
  func periodic() async throws {
    struct Boom: Error {}
    let runs = Mutex(0)
    let failures = Mutex(0)
    let job = StoreMaintenance(name: "test", every: .milliseconds(20)) {
      let n = runs.withLock { n in
        n += 1
        return n
      }
      if n == 2 { throw Boom() }
    }
    let task = Task { await job.run { _ in failures.withLock { $0 += 1 } } }
    #expect(await eventually { runs.withLock { $0 } >= 4 })
    task.cancel()
    await task.value
    let stopped = runs.withLock { $0 }
    try await Task.sleep(for: .milliseconds(100))
    #expect(runs.withLock { $0 } == stopped, "the job ran after cancellation")
    #expect(failures.withLock { $0 } == 1)
  }
}
