import NIOPosix
import Synchronization

/// Group commit for directory fsyncs: callers that ask while a round is running wait for the
/// next round, which syncs every directory they named once.
///
/// A directory fsync is a journal commit; with one per write, concurrent small writes
/// queue behind each other. Batched, N writers waiting on the same round cost one commit
/// per distinct directory. Each caller still returns only once its directory is durable.
final class DirectorySyncer: Sendable {
  private enum Turn { case lead, done }

  private struct State {
    var running = false
    var directories: Set<String> = []
    var waiters: [CheckedContinuation<Turn, any Error>] = []
  }

  private let state = Mutex(State())
  private let pool: NIOThreadPool

  init(pool: NIOThreadPool = FsyncThreads.pool) { self.pool = pool }

  /// Returns once `directory` has been fsynced after this call began.
  func sync(_ directory: String) async throws {
    let turn = try await withCheckedThrowingContinuation {
      (c: CheckedContinuation<Turn, any Error>) in
      state.withLock { s in
        s.directories.insert(directory)
        if s.running {
          s.waiters.append(c)
        } else {
          s.running = true
          c.resume(returning: .lead)
        }
      }
    }
    guard turn == .lead else { return }
    // Lead one round: everything registered until now, including our own directory.
    let (directories, waiters) = state.withLock { s in
      defer {
        s.directories = []
        s.waiters = []
      }
      return (s.directories, s.waiters)
    }
    let result: Result<Void, any Error>
    do {
      // In parallel: after the first, each is mostly a device cache flush, and the block
      // layer merges flushes that are in flight together.
      try await withThrowingDiscardingTaskGroup { group in
        for d in directories {
          group.addTask { try await self.pool.runIfActive { try FileCalls.syncDirectory(d) } }
        }
      }
      result = .success(())
    } catch {
      result = .failure(error)
    }
    for w in waiters { w.resume(with: result.map { .done }) }
    // Whoever registered during the round leads the next one.
    state.withLock { s in
      if s.waiters.isEmpty {
        s.running = false
      } else {
        s.waiters.removeFirst().resume(returning: .lead)
      }
    }
    try result.get()
  }
}

/// Threads for fsync calls only. An fsync waits milliseconds on the device while using no
/// CPU; on the shared blocking pool (one thread per core) a few of them would hold up every
/// read. Lives as long as the process, like `NIOThreadPool.singleton`.
enum FsyncThreads {
  static let pool: NIOThreadPool = {
    let pool = NIOThreadPool(numberOfThreads: 16)
    pool.start()
    return pool
  }()
}
