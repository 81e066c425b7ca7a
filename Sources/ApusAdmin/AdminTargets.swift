import ApusConfig
import ApusServer
import ApusWorker

/// The parts of this process the admin listener reports on and can drain.
public struct AdminTargets: Sendable {
  public var config: ApusConfiguration
  /// The server role (stores, schedulers, listeners); nil in a worker-only process.
  public var server: ApusServer?
  public var workers: [Worker]

  public init(config: ApusConfiguration, server: ApusServer?, workers: [Worker]) {
    self.config = config
    self.server = server
    self.workers = workers
  }

  /// What this process does, from its config: `cas`, `action_cache`, `execution`,
  /// `scheduler` (a worker API), `worker`.
  var roles: [String] {
    let instances = config.servers.flatMap { $0.instances.values }
    var roles: [String] = []
    if instances.contains(where: { $0.cas != nil }) { roles.append("cas") }
    if instances.contains(where: { $0.actionCache != nil }) { roles.append("action_cache") }
    if instances.contains(where: { $0.execution != nil }) { roles.append("execution") }
    if config.servers.contains(where: { $0.workerAPI != nil }) { roles.append("scheduler") }
    if !config.workers.isEmpty { roles.append("worker") }
    return roles
  }
}
