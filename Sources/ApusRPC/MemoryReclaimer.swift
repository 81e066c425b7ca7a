import CApusSystem
import NIOCore
import NIOPosix
import Synchronization

/// Gives freed heap memory back to the OS after connections go away.
///
/// The allocator is tuned to keep freed memory (so blob-sized buffers are not faulted in
/// again and again); after a burst of clients leaves, that memory would stay resident.
/// A trim runs on the thread pool `delay` after a request; requests made while one is
/// pending get one more trim after it, so memory freed late is returned too.
public final class MemoryReclaimer: Sendable {
  public static let shared = MemoryReclaimer()

  /// 0: idle; 1: a trim is scheduled; 2: scheduled, and another is wanted after it.
  private let state = Atomic<Int>(0)
  private let delay = TimeAmount.seconds(2)

  public func requestTrim(on loop: any EventLoop) {
    while true {
      let current = state.load(ordering: .relaxed)
      if current == 2 { return }
      if state.compareExchange(expected: current, desired: current + 1, ordering: .relaxed).exchanged {
        if current == 0 { schedule(on: loop) }
        return
      }
    }
  }

  private func schedule(on loop: any EventLoop) {
    loop.scheduleTask(in: delay) {
      NIOThreadPool.singleton.submit { _ in
        apus_release_free_memory()
        // 2 → 1: trim once more; 1 → 0: done.
        if self.state.subtract(1, ordering: .relaxed).newValue > 0 { self.schedule(on: loop) }
      }
    }
  }
}
