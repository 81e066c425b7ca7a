import Testing

@testable import ApusStore

@Suite("LRU index", .timeLimit(.minutes(3)))
struct LRUIndexTests {
  @Test("order, replacement and age")
  func behaviour() {
    var lru = LRUIndex<Int, String>()
    lru.set(1, "a", size: 10, now: 0)
    lru.set(2, "b", size: 10, now: 5)
    lru.set(3, "c", size: 10, now: 10)
    #expect(lru.get(1, now: 11) == "a")
    lru.set(2, "B", size: 20, now: 12)
    #expect(lru.totalBytes == 40)
    #expect(lru.evict(maxBytes: 30, maxCount: nil, maxAge: nil, now: 12).map(\.0) == [3])
    #expect(lru.evict(maxBytes: nil, maxCount: nil, maxAge: 5, now: 17).map(\.0) == [1])
    #expect(lru.count == 1 && lru.peek(2) == "B")
    #expect(lru.remove(2) == "B")
    #expect(lru.count == 0 && lru.totalBytes == 0)
    for i in 0..<100 { lru.set(i, "\(i)", size: 1, now: 0) }
    #expect(lru.evict(maxBytes: nil, maxCount: 10, maxAge: nil, now: 0).map(\.0) == Array(0..<90))
  }

  /// A key whose hashes collide in groups of ~13, so probe runs are long and deletions
  /// have to shift entries back across them.
  struct CollidingKey: Hashable {
    var value: Int
    func hash(into hasher: inout Hasher) { hasher.combine(value / 13) }
  }

  @Test("random inserts, lookups and removals agree with a Dictionary model")
  func model() {
    var index = LRUIndex<CollidingKey, Int>()
    var model: [Int: Int] = [:]
    var rng = SplitMix64(seed: 42)
    for step in 0..<60_000 {
      let k = Int(rng.next() % 3_000)
      switch rng.next() % 4 {
      case 0, 1:
        index.set(CollidingKey(value: k), step, size: Int64(k % 10), now: 0)
        model[k] = step
      case 2:
        #expect(index.remove(CollidingKey(value: k)) == model.removeValue(forKey: k))
      default:
        #expect(index.get(CollidingKey(value: k), now: 0) == model[k])
      }
      if step % 5_000 == 0 {
        #expect(index.count == model.count)
        #expect(index.totalBytes == Int64(model.keys.reduce(0) { $0 + $1 % 10 }))
        for key in 0..<3_000 { #expect(index.peek(CollidingKey(value: key)) == model[key]) }
      }
    }
  }

  @Test("eviction takes the least recently used first and releases values")
  func recency() {
    final class Payload {}
    weak var evictedPayload: Payload?
    var index = LRUIndex<Int, Payload>()
    do {
      let p = Payload()
      evictedPayload = p
      index.set(1, p, size: 10, now: 0)
    }
    index.set(2, Payload(), size: 10, now: 1)
    index.set(3, Payload(), size: 10, now: 2)
    _ = index.get(1, now: 3)
    let byCount = index.evict(maxBytes: nil, maxCount: 2, maxAge: nil, now: 3)
    #expect(byCount.map(\.0) == [2])
    let byBytes = index.evict(maxBytes: 10, maxCount: nil, maxAge: nil, now: 3)
    #expect(byBytes.map(\.0) == [3])
    #expect(index.evict(maxBytes: nil, maxCount: nil, maxAge: 5, now: 9).map(\.0) == [1])
    #expect(index.count == 0 && index.totalBytes == 0)
    #expect(evictedPayload == nil)
  }
}

/// A small deterministic generator, so a failure reproduces.
struct SplitMix64: RandomNumberGenerator {
  var state: UInt64
  init(seed: UInt64) { state = seed }
  mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
}
