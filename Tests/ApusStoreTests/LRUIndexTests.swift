import Testing

@testable import ApusProto
@testable import ApusStore

extension Int: LRUIndexKey {}

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
  struct CollidingKey: LRUIndexKey {
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

@Suite("LRU index key hash")
struct LRUIndexKeyTests {
  /// Slots the low 12 bits of the hashes reach, for 4,096 keys.
  func slotsReached(_ keys: [BlobDigest]) -> Int {
    let seed = LRUIndexSeed()
    return Set(keys.map { $0.indexHash(seed) & 4095 }).count
  }

  @Test(
    "digests that differ in one word, or in a word and the size together, spread over the table")
  func spread() {
    // Random hashes reach about 2,590 of 4,096 slots; a hash that dropped a word's high bits
    // or cancelled the size against a word would put these in a handful.
    let word = (0..<4096).map { BlobDigest(words: (0, UInt64($0) << 40, 0, 0), sizeBytes: 1) }
    let traded = (0..<4096).map { BlobDigest(words: (0, 0, 0, UInt64($0)), sizeBytes: Int64($0)) }
    let size = (0..<4096).map { BlobDigest(words: (7, 7, 7, 7), sizeBytes: Int64($0) << 20) }
    for keys in [word, traded, size] { #expect(slotsReached(keys) > 2_400) }
  }

  @Test("a digest-keyed index agrees with a Dictionary")
  func digestModel() {
    var index = LRUIndex<BlobDigest, Int>()
    var model: [BlobDigest: Int] = [:]
    var rng = SplitMix64(seed: 7)
    let keys = (0..<2_000).map { _ in
      BlobDigest(
        words: (rng.next(), rng.next(), 0, rng.next() % 4), sizeBytes: Int64(rng.next() % 3))
    }
    for step in 0..<20_000 {
      let key = keys[Int(rng.next() % UInt64(keys.count))]
      if rng.next() % 3 == 0 {
        #expect(index.remove(key) == model.removeValue(forKey: key))
      } else {
        index.set(key, step, size: 1, now: 0)
        model[key] = step
      }
    }
    #expect(index.count == model.count)
    for key in keys { #expect(index.peek(key) == model[key]) }
  }
}
