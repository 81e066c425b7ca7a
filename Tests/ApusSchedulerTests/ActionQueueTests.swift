import ApusConfig
import ApusProto
import Testing

@testable import ApusScheduler

@Suite("ActionQueue")
struct ActionQueueTests {
  let rules = SchedulerConfig.defaultProperties

  func key(_ pairs: [(String, String)]) -> PlatformKey {
    PlatformKey(pairs.map { var p = Platform.Property(); p.name = $0.0; p.value = $0.1; return p }, rules: rules)
  }

  @Test("the key keeps only restricting properties, sorted")
  func keys() {
    let a = key([("cpu_count", "2"), ("OSFamily", "linux"), ("container-image", "x")])
    let b = key([("OSFamily", "linux"), ("cpu_count", "2")])
    #expect(a == b)
    #expect(a.requirements.map(\.name) == ["OSFamily", "cpu_count"])
    #expect(key([("OSFamily", "linux")]) != b)
  }

  @Test("a lane pops by priority, then arrival; removed entries are skipped")
  func ordering() {
    var q = ActionQueue()
    let k = key([])
    let newLane = q.insert("a", key: k, instance: "", priority: 0, sequence: 1)
    let sameLane = q.insert("b", key: k, instance: "", priority: -1, sequence: 2)
    #expect(newLane && !sameLane)
    q.insert("c", key: k, instance: "", priority: 0, sequence: 3)
    q.insert("d", key: k, instance: "i", priority: 0, sequence: 0)
    let removed = q.remove("d"), again = q.remove("d")
    #expect(removed && !again)
    #expect(q.count == 3)
    #expect(q.count(instance: "") == 3 && q.count(instance: "i") == 0)
    var popped: [String?] = []
    for _ in 0..<4 { popped.append(q.pop(k)?.name) }
    #expect(popped == ["b", "a", "c", nil])
  }

  @Test("model-based: random inserts, removals and pops match a sorted array")
  func model() {
    var generator = SystemRandomNumberGenerator()
    var q = ActionQueue()
    let lanes = [key([]), key([("OSFamily", "linux")]), key([("cpu_count", "4")])]
    var model: [Int: [(priority: Int32, sequence: UInt64, name: String)]] = [0: [], 1: [], 2: []]
    var sequence: UInt64 = 0
    for step in 0..<20_000 {
      let lane = Int.random(in: 0..<3, using: &generator)
      switch Int.random(in: 0..<10, using: &generator) {
      case 0..<5:
        sequence += 1
        let name = "op\(step)", priority = Int32.random(in: -2...2, using: &generator)
        q.insert(name, key: lanes[lane], instance: "", priority: priority, sequence: sequence)
        model[lane, default: []].append((priority, sequence, name))
      case 5..<7:
        guard let victim = model[lane]?.randomElement(using: &generator) else { continue }
        let removed = q.remove(victim.name)
        #expect(removed)
        model[lane]?.removeAll { $0.name == victim.name }
      default:
        let expected = model[lane]?.min { ($0.priority, $0.sequence) < ($1.priority, $1.sequence) }
        let popped = q.pop(lanes[lane])
        #expect(popped?.name == expected?.name)
        if let expected { model[lane]?.removeAll { $0.name == expected.name } }
      }
      if step % 1000 == 0 {
        #expect(q.count == model.values.reduce(0) { $0 + $1.count })
      }
    }
    #expect(q.count == model.values.reduce(0) { $0 + $1.count })
  }

  @Test("the worker index finds the least-loaded matching worker with room left")
  func workerIndex() {
    var index = WorkerIndex(matcher: PlatformMatcher(rules: rules))
    func worker(_ id: String, _ props: [String: [String]], capacity: Int) -> WorkerRecord {
      WorkerRecord(id: id, properties: props, capacity: capacity, lastSeen: .now, send: { _ in })
    }
    index.add(worker("w1", ["OSFamily": ["linux"], "cpu_count": ["4"]], capacity: 2))
    index.add(worker("w2", ["OSFamily": ["linux"], "cpu_count": ["4"]], capacity: 2))
    index.add(worker("win", ["OSFamily": ["windows"]], capacity: 2))
    let linux = key([("OSFamily", "linux")]), big = key([("cpu_count", "3")])
    index.update("w1") { $0.running.insert("x") }
    do {
      let got = index.bestWorker(for: linux)
      #expect(got == "w2")
    }
    do {
      let got = index.bestWorker(for: key([("OSFamily", "windows")]))
      #expect(got == "win")
    }
    do {
      let got = index.bestWorker(for: key([("OSFamily", "plan9")]))
      #expect(got == nil)
    }
    do {
      let could = index.anyCouldRun(key([("OSFamily", "plan9")]))
      #expect(!could)
    }
    index.update("w2") { $0.running.insert("y"); $0.reserved["cpu_count"] = 2 }
    index.update("w1") { $0.reserved["cpu_count"] = 2 }
    do {
      let got = index.bestWorker(for: big)
      #expect(got == nil)  // both have a slot, neither 3 cpus left
    }
    index.update("w2") { $0.running.insert("z") }
    do {
      let got = index.bestWorker(for: linux)
      #expect(got == "w1")
    }
    index.update("w1") { $0.draining = true }
    do {
      let got = index.bestWorker(for: linux)
      #expect(got == nil)
    }
    do {
      let got = index.remove("w1")?.id
      #expect(got == "w1")
    }
    #expect(index.count == 2)
  }
}
