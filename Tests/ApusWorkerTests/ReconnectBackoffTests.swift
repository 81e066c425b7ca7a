import Testing

@testable import ApusWorker

@Suite("ReconnectBackoff")
struct ReconnectBackoffTests {
  /// A generator that always returns the same word: 1 gives the lowest delay, max the highest
  /// (0 would spin the standard library's rejection loop forever).
  struct Fixed: RandomNumberGenerator {
    let value: UInt64
    mutating func next() -> UInt64 { value }
  }

  @Test("doubles from 100 ms to a 5 s cap, each delay in the upper half of its ceiling")
  func growth() {
    var backoff = ReconnectBackoff()
    var high = Fixed(value: .max)
    let ceilings = (0..<10).map { _ in backoff.next(using: &high) }
    #expect(ceilings.map { ReconnectBackoff.nanoseconds($0) / 1_000_000 } == [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000])
    var low = Fixed(value: 1)
    var again = ReconnectBackoff()
    let floors = (0..<8).map { _ in again.next(using: &low) }
    #expect(floors.map { ReconnectBackoff.nanoseconds($0) / 1_000_000 } == [50, 100, 200, 400, 800, 1600, 2500, 2500])
  }

  @Test("jitter spreads delays; reset starts over")
  func jitterAndReset() {
    var backoff = ReconnectBackoff()
    for _ in 0..<6 { _ = backoff.next() }
    #expect(!backoff.isEarly)
    let spread = Set((0..<50).map { _ in
      var b = ReconnectBackoff(initial: .seconds(1), cap: .seconds(1))
      return b.next()
    })
    #expect(spread.count > 40)
    #expect(spread.allSatisfy { $0 >= .milliseconds(500) && $0 <= .seconds(1) })
    backoff.reset()
    #expect(backoff.isEarly)
    #expect(backoff.next() <= .milliseconds(100))
  }
}
