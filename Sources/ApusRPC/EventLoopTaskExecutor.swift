import NIOCore

/// Runs a task's jobs on one event loop. A call's handler task prefers its connection's loop,
/// so reading requests, running the handler and queueing responses stay on one thread: no
/// hand-off to the cooperative pool and back per call (measured as half the CPU of a small
/// RPC, most of it the kernel switching threads). Work that must not hold the loop — blocking
/// file calls — already runs on a thread pool.
final class EventLoopTaskExecutor: TaskExecutor {
  let eventLoop: any EventLoop

  init(_ eventLoop: any EventLoop) {
    self.eventLoop = eventLoop
  }

  func enqueue(_ job: consuming ExecutorJob) {
    let job = UnownedJob(job)
    eventLoop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
  }
}
