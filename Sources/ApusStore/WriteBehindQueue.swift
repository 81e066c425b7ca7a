import ApusProto
import Logging
import Synchronization

/// The blobs an `async` fast_slow store has acknowledged but not yet copied to its slow tier.
///
/// Bounded in bytes and entries (an upload beyond either fails with RESOURCE_EXHAUSTED),
/// listed in a `WriteBehindJournal` so a restart resumes the copies, and drained first in,
/// first out by `run`, a few copies at a time. A failed copy goes to the back of the queue
/// and pauses the whole queue with a backoff that doubles up to 10 s (the slow tier is most
/// likely down for every blob, and its circuit breaker makes each try cheap), reset by the
/// next success.
public final class WriteBehindQueue: Sendable {
  /// What became of one copy.
  public enum CopyResult: Sendable {
    case copied
    /// The fast tier no longer has the blob (damaged and quarantined): nothing to copy.
    case gone
  }

  /// `reserved`: uploads in progress (how many); `queued`: in the fast tier, waiting;
  /// `copying`: being copied.
  private enum Phase: Equatable {
    case reserved(Int)
    case queued, copying
  }

  private struct State {
    var phases: [BlobDigest: Phase] = [:]
    var order: [BlobDigest] = []
    var head = 0
    var bytes: Int64 = 0
    var copying = 0
    var pausedUntil: ContinuousClock.Instant?
    var backoff: Duration = .zero
    /// The run loop, while it waits.
    var wake: CheckedContinuation<Void, Never>?
    /// A wake-up that came while the loop was not waiting.
    var pendingWake = false
    /// The end of the pause a timer child is armed for.
    var timerUntil: ContinuousClock.Instant?
    var failures = 0
  }

  let name: String
  let maxBytes: Int64
  let maxEntries: Int
  let concurrency: Int
  private let journal: WriteBehindJournal
  private let state = Mutex(State())
  private let logger: Logger
  static let maxBackoff: Duration = .seconds(10)

  /// Opens the journal in `directory`; what it lists is queued again (call `restored` to learn it).
  public static func open(
    directory: String, name: String, maxBytes: Int64, maxEntries: Int, concurrency: Int, logger: Logger
  ) async throws -> (WriteBehindQueue, restored: [BlobDigest]) {
    let (journal, live, torn) = try await WriteBehindJournal.open(directory: directory)
    if torn > 0 {
      logger.warning("\(name): ignored \(torn) unreadable journal lines (a write cut short by a crash)")
    }
    let queue = WriteBehindQueue(
      journal: journal, name: name, maxBytes: maxBytes, maxEntries: maxEntries, concurrency: concurrency,
      logger: logger)
    queue.state.withLock { s in
      for d in live where s.phases[d] == nil {
        s.phases[d] = .queued
        s.order.append(d)
        s.bytes += d.sizeBytes
      }
    }
    if !live.isEmpty {
      logger.notice("\(name): \(live.count) blobs from before the restart are queued for the slow tier")
    }
    return (queue, live)
  }

  private init(
    journal: WriteBehindJournal, name: String, maxBytes: Int64, maxEntries: Int, concurrency: Int, logger: Logger
  ) {
    self.journal = journal
    self.name = name
    self.maxBytes = maxBytes
    self.maxEntries = maxEntries
    self.concurrency = max(1, concurrency)
    self.logger = logger
  }

  /// Blobs and bytes waiting (reserved, queued or being copied).
  public var depth: (entries: Int, bytes: Int64) { state.withLock { ($0.phases.count, $0.bytes) } }

  /// Makes room for `digest` before its upload and lists it in the journal (write-ahead:
  /// durable before the blob is, so a crash can never leave an acknowledged blob unlisted).
  /// Returns false if the blob is queued already (nothing to do but write the fast tier
  /// again); RESOURCE_EXHAUSTED when the queue is full. Each `true` must be followed by
  /// `commit` or `release`.
  public func reserve(_ digest: BlobDigest) async throws -> Bool {
    let reserved = try state.withLock { s -> Bool in
      switch s.phases[digest] {
      case .reserved(let n):
        s.phases[digest] = .reserved(n + 1)
        return true
      case .queued, .copying:
        return false
      case nil:
        guard s.phases.count < maxEntries, s.bytes + digest.sizeBytes <= maxBytes || s.phases.isEmpty else {
          throw StoreError(
            .resourceExhausted,
            "\(name): the write-behind queue to the slow tier is full (\(s.phases.count) blobs, \(s.bytes) bytes "
              + "waiting; limits \(maxEntries) blobs, \(maxBytes) bytes); retry later")
        }
        s.phases[digest] = .reserved(1)
        s.bytes += digest.sizeBytes
        return true
      }
    }
    guard reserved else { return false }
    // A second concurrent upload of the same blob also waits for a journal line of its own.
    do {
      try await journal.added(digest)
    } catch {
      await release(digest)
      throw error
    }
    return true
  }

  /// The upload went wrong before the blob was in the fast tier: gives its room back once no
  /// other upload of it is in progress.
  public func release(_ digest: BlobDigest) async {
    let removed = state.withLock { s -> Bool in
      guard case .reserved(let n) = s.phases[digest] else { return false }
      if n > 1 {
        s.phases[digest] = .reserved(n - 1)
        return false
      }
      s.phases[digest] = nil
      s.bytes -= digest.sizeBytes
      return true
    }
    if removed { try? await journal.removed(digest) }
  }

  /// The fast tier has the blob: hands it to the copier. Returns false if an earlier upload
  /// of it already did (the caller's pin is then not needed).
  @discardableResult
  public func commit(_ digest: BlobDigest) -> Bool {
    let queued = state.withLock { s -> Bool in
      guard case .reserved = s.phases[digest] else { return false }
      s.phases[digest] = .queued
      s.order.append(digest)
      return true
    }
    if queued { wakeUp() }
    return queued
  }

  /// Copies queued blobs with `copy` until cancelled; `settled` is called once per blob that
  /// leaves the queue (copied, or gone from the fast tier).
  public func run(
    copy: @escaping @Sendable (BlobDigest) async throws -> CopyResult,
    settled: @escaping @Sendable (BlobDigest) -> Void
  ) async {
    // A pause's timer belonged to an earlier run.
    state.withLock { $0.timerUntil = nil }
    await withDiscardingTaskGroup { group in
      while !Task.isCancelled {
        switch next() {
        case .copy(let digest):
          group.addTask { await self.copyOne(digest, copy, settled) }
        case .wait(let until):
          if let until {
            // A timer child wakes the loop when the pause ends; a commit may wake it sooner.
            group.addTask {
              try? await Task.sleep(until: until)
              self.wakeUp()
            }
          }
          await withTaskCancellationHandler {
            await withCheckedContinuation { c in
              let resumeNow = state.withLock { s -> Bool in
                if s.pendingWake || Task.isCancelled {
                  s.pendingWake = false
                  return true
                }
                s.wake = c
                return false
              }
              if resumeNow { c.resume() }
            }
          } onCancel: {
            self.wakeUp()
          }
        }
      }
      group.cancelAll()
    }
  }

  private enum Step {
    case copy(BlobDigest)
    /// Nothing to start now: wait for a wake-up, or until the instant.
    case wait(ContinuousClock.Instant?)
  }

  private func next() -> Step {
    state.withLock { s in
      if let until = s.pausedUntil, until > .now {
        // One timer per pause, however often the loop is woken meanwhile.
        guard s.timerUntil != until else { return .wait(nil) }
        s.timerUntil = until
        return .wait(until)
      }
      guard s.copying < concurrency else { return .wait(nil) }
      while s.head < s.order.count {
        let d = s.order[s.head]
        s.head += 1
        if s.head > 4096 && s.head * 2 > s.order.count {
          s.order.removeFirst(s.head)
          s.head = 0
        }
        guard s.phases[d] == .queued else { continue }
        s.phases[d] = .copying
        s.copying += 1
        return .copy(d)
      }
      return .wait(nil)
    }
  }

  private func wakeUp() {
    let wake = state.withLock { s in
      defer { s.wake = nil }
      if s.wake == nil { s.pendingWake = true }
      return s.wake
    }
    wake?.resume()
  }

  private func copyOne(
    _ digest: BlobDigest, _ copy: @Sendable (BlobDigest) async throws -> CopyResult,
    _ settled: @Sendable (BlobDigest) -> Void
  ) async {
    let outcome: Result<CopyResult, any Error>
    do { outcome = .success(try await copy(digest)) } catch { outcome = .failure(error) }
    if Task.isCancelled {
      // Shutting down: the copy is retried at the next start (the journal still lists it).
      state.withLock { s in
        s.phases[digest] = .queued
        s.order.append(digest)
        s.copying -= 1
      }
      return
    }
    switch outcome {
    case .success(let result):
      if result == .gone {
        logger.warning(
          "\(name): \(digest) is not in the fast tier (its upload did not complete before a restart, or the file was damaged); nothing to copy")
      }
      do { try await journal.removed(digest) } catch {
        logger.warning("\(name): cannot update the write-behind journal: \(error)")
      }
      let recovered = state.withLock { s -> Int in
        s.phases[digest] = nil
        s.bytes -= digest.sizeBytes
        s.copying -= 1
        s.pausedUntil = nil
        s.backoff = .zero
        defer { s.failures = 0 }
        return s.failures
      }
      settled(digest)
      if recovered > 0 {
        logger.notice("\(name): the slow tier accepts writes again; \(depth.entries) blobs still queued")
      }
    case .failure(let error):
      let (failures, pause) = state.withLock { s in
        s.phases[digest] = .queued
        s.order.append(digest)
        s.copying -= 1
        s.failures += 1
        s.backoff = min(max(s.backoff * 2, .milliseconds(250)), Self.maxBackoff)
        let pause = s.backoff * Double.random(in: 0.5...1)
        s.pausedUntil = .now + pause
        return (s.failures, pause)
      }
      // The first failure and then one in a hundred: an outage fails every copy.
      if failures == 1 || failures % 100 == 0 {
        logger.warning(
          "\(name): copying to the slow tier failed; retrying in \(CircuitBreaker.seconds(pause))",
          metadata: ["error": "\(error)", "failures": "\(failures)", "queued": "\(depth.entries)"])
      }
    }
    wakeUp()
  }
}
