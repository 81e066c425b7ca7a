import PostgresNIO

extension PostgresSchedulerStore {
  /// Hands every change notification to `handle` until cancelled, on one pooled connection
  /// holding `LISTEN apus_operations` and `LISTEN apus_queue`. A broken connection is
  /// replaced with backoff (0.1 s doubling to 5 s); after each (re)subscription `handle`
  /// gets `.resubscribed`, since notifications sent meanwhile are lost.
  public func listen(_ handle: @escaping @Sendable (StateChange) -> Void) async {
    var backoff = Duration.milliseconds(100)
    let scheduler = self.scheduler
    while !Task.isCancelled {
      do {
        try await client.withConnection { connection in
          try await connection.listen(on: "apus_operations") { operations in
            try await connection.listen(on: "apus_queue") { queue in
              handle(.resubscribed)
              try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                  for try await n in operations { handle(.operation(n.payload)) }
                }
                group.addTask {
                  for try await n in queue where n.payload == scheduler { handle(.queued) }
                }
                try await group.next()
                group.cancelAll()
              }
            }
          }
        }
        backoff = .milliseconds(100)
      } catch {
        guard !Task.isCancelled else { return }
        logger.warning(
          "lost the database notification connection; polling until it is back",
          metadata: ["database": "\(config.displayName)", "error": "\(Self.describe(error))"])
        try? await Task.sleep(for: backoff)
        backoff = min(backoff * 2, .seconds(5))
      }
    }
  }
}
