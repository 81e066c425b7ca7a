import CoreMetrics
import Logging
import Synchronization

/// Fails calls to a remote backend at once while it is down, instead of letting each one
/// wait out its timeouts.
///
/// Closed: calls go through; `failureThreshold` consecutive failures open it. Open: calls
/// are refused with UNAVAILABLE. After `openDuration` the breaker's own prober (`runProber`,
/// a background child task) sends one cheap request (half-open): an answer closes the
/// breaker, a failure opens it for another period. Client calls never serve as probes, so
/// none of them waits on a backend known to be down. Any answer from a call still in flight
/// also closes it. One breaker is shared by every store reaching the same backend, so an S3
/// CAS and AC on one bucket learn together.
public final class CircuitBreaker: Sendable {
  public enum State: String, Sendable, Equatable {
    case closed, open
    case halfOpen = "half-open"
  }

  /// What one call told about the backend.
  public enum Outcome: Sendable, Equatable {
    /// The backend answered (an error answer such as 404 counts: it is up).
    case success
    /// No usable answer: connection refused or reset, timed out, 5xx.
    case failure
    /// Nothing learned (the caller gave up first).
    case unknown
  }

  /// The state machine, pure so it can be tested step by step.
  struct Machine: Sendable, Equatable {
    let failureThreshold: Int
    let openDuration: Duration
    private(set) var state = State.closed
    private(set) var consecutiveFailures = 0
    private(set) var openUntil: ContinuousClock.Instant?

    init(failureThreshold: Int, openDuration: Duration) {
      self.failureThreshold = max(1, failureThreshold)
      self.openDuration = openDuration
    }

    /// Whether a client call may go now.
    func admits() -> Bool { state == .closed }

    /// Open and its period is over: half-open, and the caller sends the probe.
    mutating func beginProbe(now: ContinuousClock.Instant) -> Bool {
      guard state == .open, let until = openUntil, now >= until else { return false }
      state = .halfOpen
      return true
    }

    /// Records a call's (or the probe's) outcome; returns the new state when it changed.
    mutating func record(_ outcome: Outcome, now: ContinuousClock.Instant) -> State? {
      let before = state
      switch (outcome, state) {
      case (.success, _):
        consecutiveFailures = 0
        state = .closed
        openUntil = nil
      case (.failure, .closed):
        consecutiveFailures += 1
        if consecutiveFailures >= failureThreshold { open(until: now + openDuration) }
      case (.failure, .halfOpen):
        consecutiveFailures += 1
        open(until: now + openDuration)
      case (.unknown, .halfOpen):
        open(until: now)
      case (.failure, .open), (.unknown, _):
        break
      }
      return state == before ? nil : state
    }

    /// Opens at once (the backend did not answer at start).
    mutating func trip(now: ContinuousClock.Instant) -> State? {
      guard state == .closed else { return nil }
      open(until: now + openDuration)
      return state
    }

    private mutating func open(until: ContinuousClock.Instant) {
      state = .open
      openUntil = until
    }
  }

  /// Names the backend in logs and errors, e.g. `s3 http://minio:9000/cache`.
  public let name: String
  private let machine: Mutex<Machine>
  /// When the breaker last left the closed state.
  private let openedAt = Mutex<ContinuousClock.Instant?>(nil)
  private let logger: Logger
  /// `apus_circuit_breaker_open{backend}`: 1 while open or half-open, set on each transition.
  private let openGauge: Meter

  public init(
    name: String, failureThreshold: Int, openDuration: Duration, logger: Logger,
    metrics: any MetricsFactory = MetricsSystem.factory
  ) {
    self.name = name
    machine = Mutex(Machine(failureThreshold: failureThreshold, openDuration: openDuration))
    self.logger = logger
    openGauge = Meter(label: "apus_circuit_breaker_open", dimensions: [("backend", name)], factory: metrics)
    openGauge.set(0)
  }

  public var state: State { machine.withLock { $0.state } }

  /// Throws UNAVAILABLE at once unless the breaker is closed.
  public func admit() throws {
    guard machine.withLock({ $0.admits() }) else {
      throw StoreError(.unavailable, "\(name) is unavailable (circuit open after repeated failures)")
    }
  }

  /// Reports how a call went; logs a change of state.
  public func record(_ outcome: Outcome, detail: @autoclosure () -> String = "") {
    let now = ContinuousClock.now
    let (changed, failures, period) = machine.withLock { m in
      let changed = m.record(outcome, now: now)
      // Set under the lock, so racing transitions leave the gauge at the final state.
      if let changed { openGauge.set(changed == .closed ? 0 : 1) }
      return (changed, m.consecutiveFailures, m.openDuration)
    }
    log(changed, failures: failures, period: period, now: now, detail: detail())
  }

  /// Opens the breaker now, whatever the count (the backend did not answer at start).
  public func trip(detail: String) {
    let now = ContinuousClock.now
    let (changed, period) = machine.withLock { m in
      let changed = m.trip(now: now)
      if changed != nil { openGauge.set(1) }
      return (changed, m.openDuration)
    }
    log(changed, failures: 1, period: period, now: now, detail: detail)
  }

  private func log(
    _ changed: State?, failures: Int, period: Duration, now: ContinuousClock.Instant, detail: @autoclosure () -> String
  ) {
    guard let changed else { return }
    switch changed {
    case .open:
      let first = openedAt.withLock { at in
        defer { at = at ?? now }
        return at == nil
      }
      if first {
        logger.warning(
          "\(name): circuit opened after \(failures) consecutive failures; failing fast for \(Self.seconds(period))",
          metadata: ["last_error": "\(detail())"])
      } else {
        logger.info(
          "\(name): probe failed, circuit stays open for \(Self.seconds(period))",
          metadata: ["last_error": "\(detail())"])
      }
    case .closed:
      let down = openedAt.withLock { at in
        defer { at = nil }
        return at.map { now - $0 } ?? .zero
      }
      logger.notice("\(name): circuit closed, the backend answers again (it failed fast for \(Self.seconds(down)))")
    case .halfOpen:
      break
    }
  }

  /// Probes the backend whenever an open period ends, until cancelled. `probe` is a cheap
  /// request that bypasses the breaker and throws when the backend did not answer.
  public func runProber(_ probe: @Sendable () async throws -> Void) async {
    let tick = min(machine.withLock { $0.openDuration }, .milliseconds(500))
    while !Task.isCancelled {
      do { try await Task.sleep(for: tick) } catch { return }
      guard machine.withLock({ $0.beginProbe(now: .now) }) else { continue }
      do {
        try await probe()
        record(.success)
      } catch is CancellationError {
        record(.unknown)
        return
      } catch {
        record(.failure, detail: "\(error)")
      }
    }
  }

  static func seconds(_ d: Duration) -> String {
    let s = Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    return s < 10 ? "\((s * 10).rounded() / 10) s" : "\(Int(s.rounded())) s"
  }
}
