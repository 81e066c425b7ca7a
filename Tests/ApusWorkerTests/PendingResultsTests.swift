import ApusProto
import Testing

@testable import ApusWorker

@Suite("PendingResults")
struct PendingResultsTests {
  func result(_ name: String, exit: Int32 = 0) -> ActionFinished {
    var f = ActionFinished()
    f.operationName = name
    var r = ExecuteResponse()
    var a = ActionResult()
    a.exitCode = exit
    r.result = a
    f.response = r
    return f
  }

  @Test("keeps results in order, bounded: the oldest goes first")
  func bounded() {
    var p = PendingResults(limit: 3)
    #expect(p.add(result("a")) == nil)
    #expect(p.add(result("b")) == nil)
    #expect(p.add(result("c")) == nil)
    #expect(p.add(result("d"))?.operationName == "a")
    #expect(p.names == ["b", "c", "d"])
    let batch = p.take()
    #expect(batch.map(\.operationName) == ["b", "c", "d"])
    #expect(p.isEmpty)
  }

  @Test("a killed copy's CANCELLED never answers a new start of the same operation; a real result does")
  func killedCopyIsNoAnswer() {
    var p = PendingResults(limit: 10)
    var killed = ActionFinished()
    killed.operationName = "k"
    var cancelled = ExecuteResponse()
    cancelled.status = RPCStatusMessage(.cancelled, "the action was cancelled")
    killed.response = cancelled
    _ = p.add(killed)
    _ = p.add(result("r", exit: 3))
    #expect(p.result(for: "k") == nil)
    for f in p.take() { p.sent(f, at: .now) }
    #expect(p.result(for: "k") == nil)
    #expect(p.result(for: "r")?.response?.result?.exitCode == 3)
  }

  @Test("a failed write puts the rest back ahead of newer results")
  func restore() {
    var p = PendingResults(limit: 3)
    _ = p.add(result("a"))
    _ = p.add(result("b"))
    let batch = p.take()
    _ = p.add(result("c"))
    p.restore(Array(batch[1...]))
    #expect(p.names == ["b", "c"])
    _ = p.add(result("d"))
    p.restore([result("x"), result("y")])
    #expect(p.names == ["b", "c", "d"])  // still bounded: the oldest (the restored ones) dropped
  }

  @Test("after a broken stream, results sent within the window are owed again, once each")
  func resend() {
    let t0 = ContinuousClock.now
    var p = PendingResults(limit: 10, recentLimit: 2, recentWindow: .seconds(10))
    p.sent(result("old"), at: t0)
    p.sent(result("a"), at: t0 + .seconds(15))
    p.sent(result("b", exit: 4), at: t0 + .seconds(16))
    p.sent(result("c"), at: t0 + .seconds(17))  // only the last two are kept
    _ = p.add(result("c"))
    #expect(p.result(for: "b")?.response?.result?.exitCode == 4)
    #expect(p.result(for: "old") == nil)
    p.streamBroke(at: t0 + .seconds(26))  // "b" is 10 s old, "c" already pending
    #expect(p.names == ["b", "c"])
    p.streamBroke(at: t0 + .seconds(27))
    #expect(p.names == ["b", "c"])
    #expect(p.result(for: "zz") == nil)
  }

  @Test("the mailbox wakes its waiter on a post or a poke, and hands back nothing when cancelled")
  func mailbox() async {
    let box = ResultMailbox()
    async let got = box.next()
    try? await Task.sleep(for: .milliseconds(20))
    _ = box.post(result("a"))
    #expect(await got.map(\.operationName) == ["a"])
    box.poke()
    #expect(await box.next().isEmpty)
    _ = box.post(result("b"))
    let waiter = Task { await box.next() }
    #expect(await waiter.value.map(\.operationName) == ["b"])
    let cancelled = Task { await box.next() }
    cancelled.cancel()
    #expect(await cancelled.value.isEmpty)
    _ = box.post(result("c"))
    #expect(box.names == ["c"])
  }
}
