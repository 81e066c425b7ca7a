/// A scheduler's queue and fleet at one instant, for `/status` and the gauges of
/// `/metrics` (docs/operations.md).
public struct SchedulerSnapshot: Sendable, Equatable {
  /// The queued and running work of one platform property set.
  public struct PlatformLoad: Sendable, Equatable {
    /// The action's platform properties (values of a repeated name joined by ",").
    public var platform: [String: String]
    public var queued: Int
    public var running: Int
    public var oldestQueued: Duration?
    /// Mean slots of the connected workers able to run it; nil when none is connected.
    public var slotsPerWorker: Double?
    /// `ceil((queued + running) / slotsPerWorker)`, with 1 slot per worker if none is
    /// connected; 0 when idle.
    public var desiredWorkers: Int

    public init(
      platform: [String: String], queued: Int, running: Int, oldestQueued: Duration?, slotsPerWorker: Double?,
      desiredWorkers: Int
    ) {
      self.platform = platform
      self.queued = queued
      self.running = running
      self.oldestQueued = oldestQueued
      self.slotsPerWorker = slotsPerWorker
      self.desiredWorkers = desiredWorkers
    }

    /// `key=value,…` sorted by key, `none` when empty: a bounded metric label.
    public var label: String {
      platform.isEmpty ? "none" : platform.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
    }
  }

  public struct WorkerState: Sendable, Equatable {
    public var id: String
    public var properties: [String: [String]]
    public var slots: Int
    public var busy: Int
    public var draining: Bool
    public var sinceKeepAlive: Duration

    public init(
      id: String, properties: [String: [String]], slots: Int, busy: Int, draining: Bool, sinceKeepAlive: Duration
    ) {
      self.id = id
      self.properties = properties
      self.slots = slots
      self.busy = busy
      self.draining = draining
      self.sinceKeepAlive = sinceKeepAlive
    }
  }

  public var queued: Int
  public var running: Int
  public var oldestQueued: Duration?
  public var platforms: [PlatformLoad]
  public var workers: [WorkerState]

  public init(
    queued: Int, running: Int, oldestQueued: Duration?, platforms: [PlatformLoad], workers: [WorkerState]
  ) {
    self.queued = queued
    self.running = running
    self.oldestQueued = oldestQueued
    self.platforms = platforms
    self.workers = workers
  }

  public var slots: Int { workers.reduce(0) { $0 + $1.slots } }
  public var busy: Int { workers.reduce(0) { $0 + $1.busy } }
  /// The sum over platforms: a fleet size an autoscaler can set directly.
  public var desiredWorkers: Int { platforms.reduce(0) { $0 + $1.desiredWorkers } }

  /// The documented formula, kept in one place for the snapshot and its tests.
  public static func desiredWorkers(queued: Int, running: Int, slotsPerWorker: Double?) -> Int {
    let work = queued + running
    guard work > 0 else { return 0 }
    let perWorker = max(1, slotsPerWorker ?? 1)
    return Int((Double(work) / perWorker).rounded(.up))
  }
}
