import ApusRPC
import NIOCore
import Synchronization

/// Whether a named store can serve now, for `/readyz`.
public struct StoreHealth: Sendable, Equatable {
  public enum State: String, Sendable {
    /// Every backend it needs answers.
    case ok
    /// A backend it reaches only as the slow tier of a `fast_slow` is down: the fast tier
    /// serves, so the process stays ready.
    case degraded
    /// A backend it needs is down.
    case unavailable
  }

  public var state: State
  /// Why it is not `ok`: which backend, and what went wrong.
  public var reason: String?

  public init(state: State, reason: String? = nil) {
    self.state = state
    self.reason = reason
  }

  public static let ok = StoreHealth(state: .ok)
}

/// Which backends a store tree needs, and how: mirrors the tree the factory built.
indirect enum StoreReach: Sendable {
  /// Memory and filesystem: always there.
  case local
  case remote(BackendProbe)
  /// Needs every one (shards, both sides of size_partitioning, completeness_checking).
  case all([StoreReach])
  case fastSlow(fast: StoreReach, slow: StoreReach)

  /// Probes what the tree needs (each backend's answer cached) and combines the results.
  func health() async -> StoreHealth {
    switch self {
    case .local:
      return .ok
    case .remote(let probe):
      guard let failure = await probe.failure() else { return .ok }
      return StoreHealth(state: .unavailable, reason: failure)
    case .all(let parts):
      var worst = StoreHealth.ok
      for part in parts {
        let h = await part.health()
        if h.state.rank > worst.state.rank { worst = h }
      }
      return worst
    case .fastSlow(let fast, let slow):
      let f = await fast.health()
      guard f.state != .unavailable else { return f }
      let s = await slow.health()
      switch s.state {
      case .ok: return f
      case .degraded: return f.state == .ok ? s : f
      case .unavailable:
        return StoreHealth(
          state: .degraded, reason: "slow tier unavailable (\(s.reason ?? "no answer")); serving from the fast tier")
      }
    }
  }
}

extension StoreHealth.State {
  fileprivate var rank: Int {
    switch self {
    case .ok: 0
    case .degraded: 1
    case .unavailable: 2
    }
  }
}

/// One remote backend's reachability (the circuit breaker's probe: HEAD of an S3 bucket,
/// GetCapabilities of a gRPC server), each answer kept for `maxAge` so frequent `/readyz`
/// scrapes do not hammer the backend, and each probe bounded by `timeout` so `/readyz`
/// answers fast.
final class BackendProbe: Sendable {
  let name: String
  /// Throws when the backend did not answer in time; given the time it may take.
  private let check: @Sendable (Duration) async throws -> Void
  private let maxAge: Duration
  private let timeout: Duration
  private let cached = Mutex<(at: ContinuousClock.Instant, failure: String?)?>(nil)

  init(
    name: String, maxAge: Duration = .seconds(5), timeout: Duration = .seconds(2),
    check: @escaping @Sendable (Duration) async throws -> Void
  ) {
    self.name = name
    self.check = check
    self.maxAge = maxAge
    self.timeout = timeout
  }

  /// nil when the backend answers; else why not, naming the backend.
  func failure() async -> String? {
    if let last = cached.withLock({ $0 }), ContinuousClock.now - last.at < maxAge { return last.failure }
    let failure: String?
    do {
      try await probe()
      failure = nil
    } catch let error as StoreError {
      failure = "\(name): \(error.message)"
    } catch let error as RPCError {
      failure = "\(name): \(error.message.isEmpty ? "\(error.code)" : error.message)"
    } catch {
      failure = "\(name): \(error)"
    }
    // A probe cut short by the caller going away says nothing about the backend.
    if !Task.isCancelled { cached.withLock { $0 = (.now, failure) } }
    return failure
  }

  /// Runs the check, giving up a little after `timeout` even if it ignores its bound.
  private func probe() async throws {
    let check = self.check, timeout = self.timeout
    try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask { try await CallDeadline.$current.withValue(.now() + TimeAmount(timeout)) { try await check(timeout) } }
      group.addTask {
        try await Task.sleep(for: timeout + .milliseconds(500))
        throw StoreError(.deadlineExceeded, "no answer within \(CircuitBreaker.seconds(timeout))")
      }
      try await group.next()
      group.cancelAll()
    }
  }
}
