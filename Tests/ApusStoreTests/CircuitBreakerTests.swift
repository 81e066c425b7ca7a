import Synchronization
import Logging
import Testing

@testable import ApusStore

@Suite("Circuit breaker", .timeLimit(.minutes(1)))
struct CircuitBreakerTests {
  typealias Machine = CircuitBreaker.Machine
  let t0 = ContinuousClock.now

  @Test("opens after the threshold of consecutive failures; a success in between resets the count")
  func opens() {
    var m = Machine(failureThreshold: 3, openDuration: .seconds(10))
    let r1 = m.record(.failure, now: t0)
    #expect(r1 == nil)
    let r2 = m.record(.failure, now: t0)
    #expect(r2 == nil)
    let r3 = m.record(.success, now: t0)
    #expect(r3 == nil)
    #expect(m.consecutiveFailures == 0)
    let r4 = m.record(.failure, now: t0)
    #expect(r4 == nil)
    let r5 = m.record(.failure, now: t0)
    #expect(r5 == nil)
    #expect(m.admits())
    let r6 = m.record(.failure, now: t0)
    #expect(r6 == .open)
    #expect(!m.admits())
    #expect(m.openUntil == t0 + .seconds(10))
    // Late failures of calls already in flight change nothing.
    let r7 = m.record(.failure, now: t0 + .seconds(1))
    #expect(r7 == nil)
    #expect(m.openUntil == t0 + .seconds(10))
  }

  @Test("the probe waits for the open period; its failure reopens, its success closes")
  func probe() {
    var m = Machine(failureThreshold: 1, openDuration: .seconds(10))
    let r8 = m.record(.failure, now: t0)
    #expect(r8 == .open)
    let r9 = m.beginProbe(now: t0 + .seconds(9))
    #expect(!r9)
    let r10 = m.beginProbe(now: t0 + .seconds(10))
    #expect(r10)
    #expect(m.state == .halfOpen)
    #expect(!m.admits(), "client calls never probe")
    let r11 = m.beginProbe(now: t0 + .seconds(10))
    #expect(!r11, "one probe at a time")
    let r12 = m.record(.failure, now: t0 + .seconds(12))
    #expect(r12 == .open)
    #expect(m.openUntil == t0 + .seconds(22))
    let r13 = m.beginProbe(now: t0 + .seconds(22))
    #expect(r13)
    let r14 = m.record(.success, now: t0 + .seconds(23))
    #expect(r14 == .closed)
    #expect(m.admits())
    #expect(m.consecutiveFailures == 0)
  }

  @Test("a probe that learned nothing lets the next one go at once; a success from any call closes")
  func unknownAndLateSuccess() {
    var m = Machine(failureThreshold: 1, openDuration: .seconds(10))
    _ = m.record(.failure, now: t0)
    let r15 = m.beginProbe(now: t0 + .seconds(10))
    #expect(r15)
    let r16 = m.record(.unknown, now: t0 + .seconds(11))
    #expect(r16 == .open)
    let r17 = m.beginProbe(now: t0 + .seconds(11))
    #expect(r17)
    _ = m.record(.failure, now: t0 + .seconds(11))
    #expect(m.state == .open)
    let r18 = m.record(.unknown, now: t0 + .seconds(12))
    #expect(r18 == nil, "unknown while open changes nothing")
    let r19 = m.record(.success, now: t0 + .seconds(12))
    #expect(r19 == .closed, "a call in flight got an answer")
  }

  @Test("trip opens at once; the breaker refuses with UNAVAILABLE and its prober closes it")
  func breakerAndProber() async throws {
    let breaker = CircuitBreaker(
      name: "s3 test", failureThreshold: 5, openDuration: .milliseconds(100), logger: Logger(label: "test"))
    try breaker.admit()
    breaker.trip(detail: "unreachable at start")
    #expect(breaker.state == .open)
    #expect(throws: StoreError.self) { try breaker.admit() }
    do {
      try breaker.admit()
    } catch let error as StoreError {
      #expect(error.code == .unavailable)
      #expect(error.message.contains("s3 test"))
    }
    // The first probe fails, the second answers.
    let probes = Counter()
    try await withThrowingDiscardingTaskGroup { group in
      group.addTask {
        await breaker.runProber {
          if probes.increment() == 1 { throw StoreError(.unavailable, "still down") }
        }
      }
      while breaker.state != .closed { try await Task.sleep(for: .milliseconds(20)) }
      group.cancelAll()
    }
    #expect(probes.value == 2)
    try breaker.admit()
  }
}

/// A thread-safe count, for closures that run concurrently.
final class Counter: Sendable {
  private let count = Mutex(0)
  var value: Int { count.withLock { $0 } }
  @discardableResult func increment() -> Int { count.withLock { $0 += 1; return $0 } }
}
