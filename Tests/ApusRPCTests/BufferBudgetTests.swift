import Synchronization
import Testing

@testable import ApusRPC

/// The memory bound's bookkeeping, without sockets: what is counted, when it is released,
/// and who is woken.
@Suite("Buffer budget", .timeLimit(.minutes(3)))
struct BufferBudgetTests {
  @Test("accounts add to the shared budget; a release below the limit wakes waiters once")
  func wakeOnRelease() {
    let budget = BufferBudget(limitBytes: 1000, minimumShareBytes: 100)
    let woken = Atomic<Int>(0)
    let a = BufferAccount(budget: budget) {}
    let b = BufferAccount(budget: budget) {}
    a.add(600)
    b.add(500)
    #expect(budget.heldBytes == 1100 && budget.isSpent)
    budget.notifyWhenAvailable(ObjectIdentifier(a)) { woken.add(1, ordering: .relaxed) }
    a.release(50)
    #expect(woken.load(ordering: .relaxed) == 0, "still at or above the limit")
    a.release(100)
    #expect(woken.load(ordering: .relaxed) == 1)
    b.release(500)
    #expect(woken.load(ordering: .relaxed) == 1, "a waiter is woken once")
    #expect(a.heldBytes == 450 && b.heldBytes == 0 && budget.heldBytes == 450)
  }

  @Test("a paused account calls back on its next release only")
  func pausedAccount() {
    let calls = Atomic<Int>(0)
    let account = BufferAccount(budget: nil) { calls.add(1, ordering: .relaxed) }
    account.add(10)
    account.release(1)
    #expect(calls.load(ordering: .relaxed) == 0)
    account.markPaused()
    account.release(1)
    account.release(1)
    #expect(calls.load(ordering: .relaxed) == 1)
  }

  @Test("queued messages are held until taken, dropped on discard, released on deinit")
  func queueAccounting() async throws {
    let budget = BufferBudget(limitBytes: 1 << 20)
    let account = BufferAccount(budget: budget) {}
    var queue: InboundMessageQueue? = InboundMessageQueue(
      highWater: 1 << 20, decompressLimit: 1 << 20, account: account,
      onDrained: { _ in })
    let message = { (n: Int) in GRPCMessageDeframer.Message(compressed: false, payload: [UInt8](repeating: 1, count: n)) }
    _ = queue?.push(message(100))
    _ = queue?.push(message(200))
    #expect(account.heldBytes == 300)
    let first = try await queue?.next()
    #expect(first?.count == 100 && account.heldBytes == 200)
    queue?.finish(nil)
    #expect(account.heldBytes == 200, "a clean end keeps messages for the reader")
    queue = nil
    #expect(account.heldBytes == 0 && budget.heldBytes == 0, "a dropped queue releases the rest")

    let other = InboundMessageQueue(
      highWater: 1 << 20, decompressLimit: 1 << 20, account: account,
      onDrained: { _ in })
    _ = other.push(message(50))
    other.discard()
    #expect(account.heldBytes == 0)
    #expect(other.push(message(50)) == false && account.heldBytes == 0, "after discard, arrivals are dropped")
  }

  @Test("a declared length reserves nothing beyond what arrives, up to 1 MiB")
  func declaredLengthIsNotTrusted() throws {
    var d = GRPCMessageDeframer(maxMessageBytes: 1 << 30)
    let prefix = grpcMessagePrefix(length: 1 << 29)
    let messages = try prefix.withUnsafeBytes { try d.append($0) }
    #expect(messages.isEmpty && d.bufferedBytes == 5)
  }
}
