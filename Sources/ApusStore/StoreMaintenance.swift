/// Upkeep a store needs: `job` at start, then every `every` (the S3 expiry sweep) or only
/// once when `every` is nil (the filesystem store's `verify_on_start`).
///
/// The server runs each as a child of its task group, so it stops with the server.
public struct StoreMaintenance: Sendable {
  /// What the log calls it.
  public var name: String
  public var every: Duration?
  public var job: @Sendable () async throws -> Void

  public init(name: String, every: Duration?, job: @escaping @Sendable () async throws -> Void) {
    self.name = name
    self.every = every
    self.job = job
  }

  /// Runs `job` every `every` (or once) until the task is cancelled; a failed run is
  /// reported through `onError` and retried at the next period.
  public func run(onError: @Sendable (any Error) -> Void) async {
    while !Task.isCancelled {
      do {
        try await job()
      } catch is CancellationError {
        return
      } catch {
        onError(error)
      }
      guard let every else { return }
      do { try await Task.sleep(for: every) } catch { return }
    }
  }
}
