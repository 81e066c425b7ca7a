import ApusProto
import ApusRPC
import ApusScheduler
import Logging
import Synchronization

/// `apus.worker.v1.WorkerAPI/Connect`: one bidirectional stream per worker (see
/// `proto/apus/worker/v1/worker.proto`). The stream's end, for whatever reason, tells the
/// scheduler the worker is gone.
public struct WorkerAPIService: Sendable {
  let scheduler: any ExecutionScheduler
  let logger: Logger
  /// Checks the `worker` permission on the scheduler before the stream is read; nil: none.
  let authorizer: Authorizer?
  public static let connectPath = "/apus.worker.v1.WorkerAPI/Connect"
  /// Numbers each WorkerAPI stream, so a stale stream's end is told from a newer one's.
  private static let sessions = Atomic<UInt64>(0)

  public init(scheduler: any ExecutionScheduler, logger: Logger, authorizer: Authorizer? = nil) {
    self.scheduler = scheduler
    self.logger = logger
    self.authorizer = authorizer
  }

  public func register(on router: inout RPCRouter) {
    let scheduler = self.scheduler
    let authorizer = self.authorizer, logger = self.logger
    router.register(Self.connectPath, longLived: true) { requests, responses, context in
      if let authorizer {
        do {
          try authorizer.authorize(try await authorizer.authenticate(context), scheduler: scheduler.name)
        } catch {
          logger.warning("worker refused", metadata: ["peer": "\(context.peer)", "error": "\(error)"])
          throw error
        }
      }
      var iterator = requests.makeAsyncIterator()
      guard let firstBytes = try await iterator.next() else { return }
      guard let register = try WorkerMessage(serializedBytes: firstBytes).register,
        !register.workerID.isEmpty
      else {
        throw RPCError(
          .invalidArgument, "the first WorkerMessage must be a register with a worker_id")
      }
      let id = register.workerID
      let session = Self.sessions.add(1, ordering: .relaxed).newValue
      let (outbox, continuation) = AsyncStream<SchedulerMessage>.makeStream()
      // The acknowledgement goes into the outbox before registering: registration may
      // dispatch a queued action at once, and the worker expects `registered` first.
      var registered = WorkerRegistered()
      registered.keepAliveSeconds = Int32(scheduler.keepAliveSeconds)
      var first = SchedulerMessage()
      first.registered = registered
      continuation.yield(first)
      try await scheduler.registerWorker(
        id: id, properties: register.properties,
        capacity: Int(register.maxConcurrentActions), runningOperations: register.runningOperations,
        session: session, send: { continuation.yield($0) })
      let rest = iterator
      do {
        try await withThrowingTaskGroup(of: Void.self) { group in
          group.addTask {
            for await message in outbox { try await responses.write(message.serializedBytes()) }
          }
          group.addTask {
            var it = rest
            while let bytes = try await it.next() {
              let message = try WorkerMessage(serializedBytes: bytes)
              if message.keepAlive != nil { await scheduler.keepAlive(id) }
              if let finished = message.finished { await scheduler.finished(id, finished) }
              if message.goingAway != nil { await scheduler.drain(id) }
            }
          }
          // The worker's side ending ends the call; the writer stops with it.
          try await group.next()
          continuation.finish()
          group.cancelAll()
        }
      } catch {
        continuation.finish()
        await scheduler.workerGone(id, session: session)
        throw error
      }
      await scheduler.workerGone(id, session: session)
    }
  }
}
