/// What a worker in this process is doing, for `/status` and `/readyz`.
public struct WorkerStatus: Sendable, Equatable {
  public var id: String
  /// The scheduler endpoint in use, or being tried: its URL (and address, for a host name).
  public var scheduler: String
  /// Whether a session with the scheduler is established now.
  public var registered: Bool
  public var slots: Int
  /// Actions running now.
  public var busy: Int
  /// Whether it has stopped taking actions (`drain()` or graceful shutdown).
  public var draining: Bool

  public init(id: String, scheduler: String, registered: Bool, slots: Int, busy: Int, draining: Bool) {
    self.id = id
    self.scheduler = scheduler
    self.registered = registered
    self.slots = slots
    self.busy = busy
    self.draining = draining
  }
}
