import ApusConfig
import ApusProto
import ApusScheduler
import Logging

extension SharedScheduler {
  /// Runs until cancelled: the connection pool, the schema migration (retried with
  /// backoff while the database is away), the change listener, dispatch, refresh of watched
  /// operations, polling and the lease sweeper. Every loop is a child task of this call.
  public func run() async {
    let store = self.store
    let (changes, changed) = AsyncStream<StateChange>.makeStream(bufferingPolicy: .bufferingNewest(65536))
    await withDiscardingTaskGroup { group in
      group.addTask { await store.run() }
      group.addTask {
        guard await self.migrate() else { return }
        await withDiscardingTaskGroup { loops in
          loops.addTask { await store.listen { changed.yield($0) } }
          loops.addTask { for await change in changes { await self.note(change) } }
          loops.addTask { for await _ in self.dispatchSignals { await self.dispatch() } }
          loops.addTask { for await _ in self.refreshSignals { await self.refresh() } }
          loops.addTask { await self.poll() }
          loops.addTask { await self.sweep() }
        }
      }
    }
  }

  /// Migrates, retrying with backoff (0.5 s doubling to 10 s); false if cancelled first.
  private func migrate() async -> Bool {
    var backoff = Duration.milliseconds(500)
    while !Task.isCancelled {
      do {
        try await store.migrate()
        keys = Set(try await store.platformKeys(rules: rules))
        return true
      } catch {
        logger.warning("cannot prepare the scheduler's database yet; retrying", metadata: ["error": "\(error.message)"])
        try? await Task.sleep(for: backoff)
        backoff = min(backoff * 2, .seconds(10))
      }
    }
    return false
  }

  private func note(_ change: StateChange) {
    switch change {
    case .queued:
      dispatchWake.yield()
    case .resubscribed:
      (fresh, inserting, ownClaims) = ([:], [], [])  // notifications may have been lost
      dirty.formUnion(watchers.keys)
      dirty.formUnion(runningOn.keys)
      refreshWake.yield()
      dispatchWake.yield()
    case .operation(let name):
      fresh[name] = nil
      inserting.remove(name)
      // The notification of this process's own claim: nothing to read.
      if ownClaims.remove(name) != nil && watchers[name] == nil { return }
      guard watchers[name] != nil || runningOn[name] != nil else { return }
      dirty.insert(name)
      refreshWake.yield()
    }
  }

  /// Claims queued work for the local workers with free slots until none is left that
  /// fits. Workers offering the same (properties and reservations) claim together in one
  /// statement, a slot list spread over them least-loaded first, so a pass costs one query
  /// per kind of worker, not one per worker. One pass at a time; a wake during a pass runs
  /// another.
  func dispatch() async {
    guard !dispatching else {
      dispatchAgain = true
      return
    }
    dispatching = true
    defer { dispatching = false }
    repeat {
      dispatchAgain = false
      var exhausted: Set<[PlatformKey]> = []
      var progress = true
      while progress {
        progress = false
        for group in freeGroups() {
          let fits = keys.filter { $0.isSatisfied(by: group.offered, reserved: group.reserved, rules: rules) }
            .sorted { $0.rawValue < $1.rawValue }
          guard !fits.isEmpty, !exhausted.contains(fits) else { continue }
          // Keys with a `minimum` property change what fits with every claim: one at a time.
          let slots = fits.contains { $0.reserves(rules) } ? Array(group.slots.prefix(1)) : group.slots
          let claimed: [ClaimedAction]
          do {
            claimed = try await store.claim(slots: slots, keys: fits)
          } catch {
            return  // the outage is logged and reported once; polling dispatches again
          }
          for action in claimed where !assign(action, to: action.worker) {
            // The worker left while the claim was in flight: the action goes back unrun.
            _ = try? await store.handBack(action.start.operationName, worker: action.worker)
          }
          if claimed.count < slots.count {
            exhausted.insert(fits)  // nothing more queued for these keys in this pass
          }
          if !claimed.isEmpty { progress = true }
        }
      }
    } while dispatchAgain
  }

  /// Free local workers grouped by what they offer and hold: each group's slots, one entry
  /// per free slot, least-loaded workers first and round-robin.
  private func freeGroups() -> [(offered: [String: [String]], reserved: [String: Double], slots: [String])] {
    struct Signature: Hashable {
      let offered: [String: [String]]
      let reserved: [String: Double]
    }
    var groups: [Signature: [LocalWorker]] = [:]
    for worker in workers.values where worker.freeSlots > 0 {
      groups[Signature(offered: worker.properties, reserved: worker.reserved.filter { $0.value != 0 }), default: []]
        .append(worker)
    }
    return groups.map { signature, members in
      var slots: [String] = []
      var free = members.sorted { $0.running.count < $1.running.count }.map { ($0.id, $0.freeSlots) }
      while !free.isEmpty {
        for i in free.indices { slots.append(free[i].0); free[i].1 -= 1 }
        free.removeAll { $0.1 == 0 }
      }
      return (signature.offered, signature.reserved, slots)
    }
  }

  /// Sends a claimed action to its local worker; false if that worker is gone. `notified`:
  /// the claim was an UPDATE, whose notification is still to come (see `ownClaims`).
  func assign(_ action: ClaimedAction, to id: String, notified: Bool = true) -> Bool {
    let name = action.start.operationName
    guard var worker = workers[id] else { return false }
    let key = keys.first { $0.rawValue == action.platformKey } ?? PlatformKey(action.platform, rules: rules)
    worker.running[name] = key
    for (k, v) in key.reservations(rules) { worker.reserved[k, default: 0] += v }
    workers[id] = worker
    runningOn[name] = id
    if notified { ownClaims.insert(name) }
    assignments += 1
    assignedAt[name] = assignments
    startedAt[name] = .now
    metrics.queueWait.record(duration: action.queueWait)
    var message = SchedulerMessage()
    message.start = action.start
    worker.send(message)
    return true
  }

  /// Queues again (no attempt counted) an action this worker was handed while the copy it
  /// had been told to stop was still ending: the worker ignored that start.
  func handBackLostStart(_ name: String, worker id: String) async {
    logger.debug("a start reached a worker while its stopped copy was ending; queued again",
      metadata: ["worker": "\(id)", "operation": "\(name)"])
    do {
      _ = try await store.handBack(name, worker: id)
    } catch {
      // Only with the database away: the action then stays assigned to this worker until
      // its execute deadline (timeout plus a lease) queues it again.
      logger.warning("could not queue again an action its worker does not run",
        metadata: ["worker": "\(id)", "operation": "\(name)", "error": "\(error.message)"])
    }
  }

  /// Reads the dirty operations again and tells watchers and workers what changed.
  func refresh() async {
    guard !dirty.isEmpty else { return }
    let names = Array(dirty)
    dirty = []
    let readAfter = assignments
    let found: [StoredOperation]
    do {
      found = try await store.operations(names)
    } catch {
      dirty.formUnion(names)  // read again at the next poll
      return
    }
    var missing = Set(names)
    for op in found {
      missing.remove(op.name)
      apply(op, readAfter: readAfter)
    }
    // Deleted or expired meanwhile: watchers end, a local copy is stopped.
    for name in missing {
      for id in watchers[name]?.continuations.keys.map({ $0 }) ?? [] { drop(watcher: id, of: name) }
      if assignedAt[name].map({ $0 <= readAfter }) ?? false { stop(name, reason: "the operation no longer exists") }
    }
  }

  /// `readAfter`: the assignments made before the read began; a local assignment made
  /// since is newer than what was read, so it is left alone.
  private func apply(_ op: StoredOperation, readAfter: UInt64) {
    if var watcher = watchers[op.name], watcher.lastStage != op.stage || op.response != nil {
      let operation = op.operation
      for (id, continuation) in watcher.continuations {
        if case .terminated = continuation.yield(operation) { watcher.continuations[id] = nil }
      }
      watcher.lastStage = op.stage
      watchers[op.name] = watcher
      if op.response != nil {
        for id in watcher.continuations.keys { drop(watcher: id, of: op.name) }
      } else if watcher.continuations.isEmpty {
        watchers[op.name] = nil
      }
    }
    if let id = runningOn[op.name], assignedAt[op.name].map({ $0 <= readAfter }) ?? false,
      op.stage != .executing || op.worker != id
    {
      stop(op.name, reason: op.stage == .completed ? "finished elsewhere (cancelled or a late result)" : "reassigned")
    }
  }

  /// The fallback for lost notifications: every poll interval, re-read what is watched or
  /// running here, refresh the platform keys and try to dispatch.
  private func poll() async {
    let interval = Duration.milliseconds(store.config.pollIntervalMilliseconds)
    while !Task.isCancelled {
      try? await Task.sleep(for: interval)
      dirty.formUnion(watchers.keys)
      dirty.formUnion(runningOn.keys)
      if let all = try? await store.platformKeys(rules: rules) { keys.formUnion(all) }
      if let counts = try? await store.queuedPerInstance() { queuedPerInstance = counts }
      await failUnsatisfiable()
      refreshWake.yield()
      dispatchWake.yield()
    }
  }

  /// Fails queued actions no live worker (on any process) could ever run, once that has
  /// held for `unsatisfiable_grace_seconds`. With no live worker at all, actions wait.
  private func failUnsatisfiable() async {
    guard let live = try? await store.liveWorkers(), !live.isEmpty, let loads = try? await store.load() else {
      unsatisfiableSince = [:]
      return
    }
    let now = ContinuousClock.now
    let grace = config.unsatisfiableGraceSeconds
    for load in loads where load.queued > 0 {
      let properties = Self.properties(load.key)
      let key = PlatformKey(properties, rules: rules)
      if live.contains(where: { key.isSatisfied(by: $0, reserved: [:], rules: rules) }) {
        unsatisfiableSince[load.key] = nil
        continue
      }
      let since = unsatisfiableSince[load.key] ?? now
      unsatisfiableSince[load.key] = since
      guard now - since >= .seconds(grace) else { continue }
      let wanted = properties.map { "\($0.name)=\($0.value)" }.joined(separator: ", ")
      let failure = Self.failure(
        .failedPrecondition,
        "no connected worker can run this action (platform: \(wanted.isEmpty ? "none" : wanted); \(live.count) worker(s) connected)")
      if let failed = try? await store.failQueued(key: load.key, olderThan: grace, failure), failed > 0 {
        for _ in 0..<failed { metrics.record(failure) }
      }
    }
  }

  /// Every third of a lease: renew this process's worker leases, requeue the actions of
  /// expired ones, retry results the database refused, forget old operations. Also pings,
  /// so an idle process sees an outage and its end.
  ///
  /// After an outage (any failed step here) orphans wait one lease before being queued
  /// again: no process could renew its leases meanwhile, so an expired lease says nothing
  /// about its worker until every live owner has had a sweep to renew it. Requeueing at
  /// once took actions from connected workers still running them, and the stop sent to
  /// such a worker could leave the action assigned to it but run nowhere.
  private func sweep() async {
    let every = Duration.milliseconds(max(200, store.config.leaseSeconds * 1000 / 3))
    let lease = Duration.seconds(store.config.leaseSeconds)
    var outage = false
    var requeueFrom = ContinuousClock.now
    while !Task.isCancelled {
      try? await Task.sleep(for: every)
      do {
        try await store.ping()
        try await store.renewLeases(Array(workers.keys))
        if outage {
          outage = false
          requeueFrom = .now + lease
          logger.debug(
            "database back: leases renewed; lost workers' actions are queued again after one lease",
            metadata: ["lease_seconds": "\(store.config.leaseSeconds)", "pending_results": "\(pendingResults.count)"])
        }
        // Results first: an action whose result waited out the outage is finished, not rerun.
        while let result = pendingResults.first {
          _ = try await store.finish(result.name, worker: result.worker, result.response)
          pendingResults.removeFirst()
        }
        guard ContinuousClock.now >= requeueFrom else { continue }
        for (name, failed) in try await store.requeueOrphans() {
          if failed {
            metrics.failed.increment()
          } else {
            metrics.retried.increment()
          }
          logger.warning(
            failed ? "action failed: its worker was lost too often" : "action queued again: its worker's lease ran out",
            metadata: ["operation": "\(name)"])
        }
        _ = try await store.purge(completedBefore: config.completedOperationSeconds)
      } catch {
        outage = true
        continue  // logged by the store when the outage began
      }
    }
  }

  /// Evicts local workers that stopped sending keep-alives.
  public func tick() async {
    let now = ContinuousClock.now
    for (id, w) in workers where now - w.lastSeen > .seconds(config.workerTimeoutSeconds) {
      logger.warning("worker timed out", metadata: ["worker": "\(id)"])
      await workerGone(id)
    }
  }

  /// The shared queue by platform (from the database; empty while it is unavailable) and
  /// this process's workers.
  public func snapshot() async -> SchedulerSnapshot {
    let now = ContinuousClock.now
    let loads = (try? await store.load()) ?? []
    let local = workers.values
    let platforms = loads.map { load -> SchedulerSnapshot.PlatformLoad in
      let properties = Self.properties(load.key)
      let key = PlatformKey(properties, rules: rules)
      let able = local.filter { key.isSatisfied(by: $0.properties, reserved: [:], rules: rules) }
      let perWorker = able.isEmpty ? nil : Double(able.reduce(0) { $0 + $1.capacity }) / Double(able.count)
      let platform = properties.reduce(into: [String: String]()) { all, p in
        all[p.name] = all[p.name].map { "\($0),\(p.value)" } ?? p.value
      }
      return .init(
        platform: platform, queued: load.queued, running: load.running, oldestQueued: load.oldestQueued,
        slotsPerWorker: perWorker,
        desiredWorkers: SchedulerSnapshot.desiredWorkers(queued: load.queued, running: load.running, slotsPerWorker: perWorker))
    }.sorted { $0.label < $1.label }
    let fleet = local.sorted { $0.id < $1.id }.map {
      SchedulerSnapshot.WorkerState(
        id: $0.id, properties: $0.properties, slots: $0.capacity, busy: $0.running.count, draining: $0.draining,
        sinceKeepAlive: now - $0.lastSeen)
    }
    return SchedulerSnapshot(
      queued: platforms.reduce(0) { $0 + $1.queued }, running: platforms.reduce(0) { $0 + $1.running },
      oldestQueued: platforms.compactMap(\.oldestQueued).max(), platforms: platforms, workers: fleet)
  }
}
