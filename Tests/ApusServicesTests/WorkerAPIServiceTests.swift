import ApusConfig
import ApusProto
import ApusRPC
import ApusScheduler
import Logging
import NIOPosix
import Testing

@testable import ApusServices

@Suite("WorkerAPI service", .timeLimit(.minutes(3)))
struct WorkerAPIServiceTests {
  @Test("a worker joining while actions wait hears `registered` before its first action")
  func registeredComesFirst() async throws {
    let scheduler = Scheduler(
      name: "main", config: SchedulerConfig(), logger: Logger(label: "test"))
    let job = ExecutionJob(
      instanceName: "",
      actionDigest: BlobDigest(hashBytes: [UInt8](repeating: 7, count: 32), sizeBytes: 1),
      action: Action(), platform: [], priority: 0, mergeable: true)
    let operation = try await scheduler.submit(job)
    var router = RPCRouter()
    WorkerAPIService(scheduler: scheduler, logger: Logger(label: "test")).register(on: &router)
    let server = GRPCServer(
      router: router, group: MultiThreadedEventLoopGroup.singleton, logger: Logger(label: "test"))
    let address = try await server.start(host: "127.0.0.1", port: 0)
    let client = GRPCClient(host: "127.0.0.1", port: try #require(address.port))

    let call = try await client.call(WorkerAPIService.connectPath)
    var hello = WorkerMessage()
    hello.register = WorkerRegister()
    hello.register?.workerID = "w1"
    hello.register?.maxConcurrentActions = 1
    try await call.requests.write(hello.serializedBytes())
    var responses = call.responses.makeAsyncIterator()
    let first = try SchedulerMessage(serializedBytes: try #require(try await responses.next()))
    let second = try SchedulerMessage(serializedBytes: try #require(try await responses.next()))
    #expect(first.registered?.keepAliveSeconds == Int32(scheduler.keepAliveSeconds))
    #expect(second.start?.operationName == operation)

    call.cancelCall()
    await client.close()
    await server.shutdown(grace: .seconds(1))
  }
}
