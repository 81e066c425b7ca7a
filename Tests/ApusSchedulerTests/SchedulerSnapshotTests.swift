import ApusConfig
import ApusProto
import Logging
import Testing

@testable import ApusScheduler

@Suite("Scheduler snapshot")
struct SchedulerSnapshotTests {
  let t = SchedulerTests()

  @Test("desired workers: ceil((queued + running) / slots per worker), 0 when idle, 1 slot when no worker")
  func formula() {
    #expect(SchedulerSnapshot.desiredWorkers(queued: 0, running: 0, slotsPerWorker: 4) == 0)
    #expect(SchedulerSnapshot.desiredWorkers(queued: 10, running: 0, slotsPerWorker: 2) == 5)
    #expect(SchedulerSnapshot.desiredWorkers(queued: 9, running: 2, slotsPerWorker: 4) == 3)
    #expect(SchedulerSnapshot.desiredWorkers(queued: 3, running: 0, slotsPerWorker: nil) == 3)
    #expect(SchedulerSnapshot.desiredWorkers(queued: 1, running: 0, slotsPerWorker: 0.5) == 1)
  }

  @Test("queued and running work is grouped by platform, with workers and ages")
  func grouping() async throws {
    let s = t.scheduler()
    let linux = [("OSFamily", "linux")]
    for seed in 1...5 { _ = try await s.submit(t.job(UInt8(seed), platform: linux)) }
    _ = try await s.submit(t.job(9, platform: [("OSFamily", "windows")]))
    var snap = await s.snapshot()
    #expect(snap.queued == 6 && snap.running == 0 && snap.workers.isEmpty)
    #expect(snap.platforms.map(\.label) == ["OSFamily=linux", "OSFamily=windows"])
    #expect(snap.platforms.map(\.desiredWorkers) == [5, 1])
    #expect(snap.oldestQueued != nil)

    let inbox = Inbox()
    try await s.registerWorker(id: "w1", properties: t.props(linux), capacity: 2, send: inbox.send)
    snap = await s.snapshot()
    let load = try #require(snap.platforms.first { $0.label == "OSFamily=linux" })
    #expect(load.queued == 3 && load.running == 2 && load.slotsPerWorker == 2 && load.desiredWorkers == 3)
    #expect(snap.workers.map(\.id) == ["w1"] && snap.workers[0].busy == 2 && snap.slots == 2 && snap.busy == 2)
    #expect(snap.desiredWorkers == 3 + 1)

    for name in inbox.started {
      var f = t.done()
      f.operationName = name
      await s.finished("w1", f)
    }
    snap = await s.snapshot()
    #expect(snap.running == 2 && snap.queued == 2)
  }
}
