import Logging
import ServiceLifecycle

/// Tells systemd (`Type=notify`) when this process is ready — every gRPC listener bound and
/// every local worker registered with its scheduler — and when it begins to stop. Placed
/// last in the service group, so graceful shutdown reaches it first and `STOPPING=1` goes
/// out before the others drain.
public struct SystemdReadiness: Service {
  let targets: AdminTargets
  let notifier: SystemdNotifier
  let logger: Logger

  public init(targets: AdminTargets, notifier: SystemdNotifier, logger: Logger) {
    self.targets = targets
    self.notifier = notifier
    self.logger = logger
  }

  public func run() async throws {
    guard notifier.isEnabled else { return }
    await cancelWhenGracefulShutdown {
      if let server = targets.server { _ = await server.waitUntilListening() }
      // Workers register over the network; a scheduler that is down keeps them waiting, and
      // so keeps the unit "activating" until its start timeout, as it should.
      while !Task.isCancelled, !targets.workers.allSatisfy({ $0.status.registered }) {
        try? await Task.sleep(for: .milliseconds(100))
      }
      guard !Task.isCancelled else { return }
      send("READY=1")
      try? await gracefulShutdown()
    }
    send("STOPPING=1")
  }

  private func send(_ state: String) {
    if let error = notifier.notify(state) {
      logger.warning("could not notify systemd", metadata: ["state": "\(state)", "error": "\(error)"])
    } else {
      logger.debug("notified systemd", metadata: ["state": "\(state)"])
    }
  }
}
