import ApusRPC
import ApusScheduler
import ApusServices
import CoreMetrics
import Logging
import NIOHTTP1
import Prometheus
import Synchronization

/// What each admin path answers (docs/operations.md). Transport-free: `AdminServer` hands
/// it a request and writes back the response, so the endpoints are tested without sockets.
final class AdminEndpoints: Sendable {
  let targets: AdminTargets
  let authorizer: Authorizer?
  let anonymousRead: Bool
  let version: String
  let process: ProcessMetrics
  private let logger: Logger
  /// `POST /drain` was called.
  private let drained = Atomic<Bool>(false)
  private let schedulerGauges = Mutex<[String: SchedulerGauges]>([:])

  init(targets: AdminTargets, authorizer: Authorizer?, anonymousRead: Bool, version: String, logger: Logger) {
    self.targets = targets
    self.authorizer = authorizer
    self.anonymousRead = anonymousRead
    self.version = version
    self.process = ProcessMetrics(version: version)
    self.logger = logger
  }

  /// A request as the endpoints need it.
  struct Request: Sendable {
    var method: HTTPMethod
    var path: String
    var authorization: String?
    var clientCertificate: ClientCertificateNames?
    var peer: String
  }

  func respond(_ request: Request) async -> AdminResponse {
    let path = request.path.split(separator: "?", maxSplits: 1).first.map(String.init) ?? request.path
    let isPost = path == "/drain"
    guard request.method == (isPost ? .POST : .GET) || (!isPost && request.method == .HEAD) else {
      let known = ["/", "/healthz", "/readyz", "/metrics", "/status", "/drain"].contains(path)
      return known
        ? .error(.methodNotAllowed, "\(path) takes \(isPost ? "POST" : "GET")")
        : .error(.notFound, "no endpoint \(path)")
    }
    switch path {
    case "/healthz": return .json(["status": "ok"])
    case "/readyz":
      let readiness = await readiness()
      return .json(readiness, status: readiness.ready ? .ok : .serviceUnavailable)
    case "/":
      return .text(StatusPage.html, contentType: "text/html; charset=utf-8")
    case "/metrics":
      if let refusal = await refuse(request, read: true) { return refusal }
      return AdminResponse(
        status: .ok, contentType: "text/plain; version=0.0.4; charset=utf-8", body: await metrics())
    case "/status":
      if let refusal = await refuse(request, read: true) { return refusal }
      return .json(await status())
    case "/drain":
      if let refusal = await refuse(request, read: false) { return refusal }
      drain()
      logger.notice("draining on request", metadata: ["peer": "\(request.peer)"])
      return .json(await readiness(), status: .accepted)
    default:
      return .error(.notFound, "no endpoint \(path)")
    }
  }

  // MARK: - Access

  /// Nil when the caller may go on; else the 401/403 answer. Without `auth` all is open.
  private func refuse(_ request: Request, read: Bool) async -> AdminResponse? {
    guard let authorizer, !(read && anonymousRead) else { return nil }
    var metadata: [(name: String, value: String)] = []
    if let authorization = request.authorization { metadata.append(("authorization", authorization)) }
    let context = ServerContext(
      path: request.path, metadata: Metadata(metadata), deadline: nil, peer: request.peer,
      clientCertificate: request.clientCertificate)
    do {
      let principal = try await authorizer.authenticate(context)
      guard principal != nil else { return .error(.unauthorized, "credentials are required (Authorization: Bearer …)") }
      try authorizer.authorizeAdmin(principal)
      return nil
    } catch let error as RPCError where error.code == .permissionDenied {
      return .error(.forbidden, error.message)
    } catch {
      return .error(.unauthorized, "\(RPCError(from: error).message)")
    }
  }

  // MARK: - Drain

  var isDraining: Bool {
    drained.load(ordering: .relaxed) || (targets.server?.isStopping ?? false)
      || targets.workers.contains { $0.status.draining }
  }

  /// Workers stop taking actions and finish the running ones; `/readyz` answers 503 so a
  /// load balancer moves traffic away before the process is stopped.
  func drain() {
    drained.store(true, ordering: .relaxed)
    for worker in targets.workers { worker.drain() }
  }

  // MARK: - Readiness

  func readiness() async -> Readiness {
    var notReady: [Readiness.Finding] = []
    var degraded: [Readiness.Finding] = []
    if let server = targets.server {
      if let runtime = server.runtime {
        for (name, health) in await runtime.storeMonitor.health().sorted(by: { $0.key < $1.key }) {
          let finding = Readiness.Finding(component: "store \(name)", reason: health.reason ?? health.state.rawValue)
          switch health.state {
          case .ok: break
          case .degraded: degraded.append(finding)
          case .unavailable: notReady.append(finding)
          }
        }
        // A scheduler whose shared state (PostgreSQL) does not answer takes no Execute.
        for (name, scheduler) in runtime.schedulers.sorted(by: { $0.key < $1.key }) {
          if let reason = scheduler.unavailableReason {
            notReady.append(.init(component: "scheduler \(name)", reason: reason))
          }
        }
      } else {
        notReady.append(.init(component: "listeners", reason: "not bound yet"))
      }
    }
    for worker in targets.workers {
      let status = worker.status
      if !status.registered {
        notReady.append(.init(component: "worker \(status.id)", reason: "not registered with \(status.scheduler)"))
      }
    }
    return Readiness(draining: isDraining, notReady: notReady, degraded: degraded)
  }

  // MARK: - Status

  func status() async -> StatusFeed {
    var schedulers: [String: StatusFeed.Scheduler] = [:]
    for (name, scheduler) in targets.server?.runtime?.schedulers ?? [:] {
      schedulers[name] = StatusFeed.Scheduler(await scheduler.snapshot())
    }
    let readiness = await readiness()
    let calls = CallTotals.current
    return StatusFeed(
      version: version, uptimeSeconds: process.uptimeSeconds, roles: targets.roles, ready: readiness.ready,
      draining: readiness.draining, schedulers: schedulers,
      stores: (targets.server?.runtime?.storeMonitor.usage() ?? [:]).mapValues { .init(entries: $0.entries, bytes: $0.bytes) },
      actionCache: ActionCacheLookups.shared.snapshot().mapValues { .init(hits: $0.hits, misses: $0.misses) },
      workers: targets.workers.map(\.status).map {
        .init(id: $0.id, scheduler: $0.scheduler, registered: $0.registered, slots: $0.slots, busy: $0.busy, draining: $0.draining)
      },
      grpc: .init(requests: calls.requests, errors: calls.errors),
      recentErrors: RecentProblems.shared.snapshot().map {
        .init(time: $0.time, level: $0.level.rawValue, message: $0.message, metadata: $0.metadata)
      })
  }

  // MARK: - Metrics

  /// Sets the gauges sampled at scrape time, then renders the registry with HELP lines.
  func metrics() async -> [UInt8] {
    process.update()
    targets.server?.runtime?.storeMonitor.updateGauges()
    for (name, scheduler) in targets.server?.runtime?.schedulers ?? [:] {
      let snapshot = await scheduler.snapshot()
      let gauges = schedulerGauges.withLock { all in
        if let g = all[name] { return g }
        let g = SchedulerGauges(scheduler: name)
        all[name] = g
        return g
      }
      gauges.update(snapshot)
    }
    var rendered: [UInt8] = []
    MetricsRegistry.shared.emit(into: &rendered)
    return MetricHelp.annotate(rendered)
  }
}
