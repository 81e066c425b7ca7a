import Logging
import Synchronization

/// The last log records at `warning` or above, for `/status` (`recent_errors`): what went
/// wrong lately, without access to the log.
///
/// Fed by ``RecentProblemsLogHandler``, which ``LogBootstrap`` puts beside the stderr
/// handler whatever the log format.
public final class RecentProblems: Sendable {
  /// One log record.
  public struct Problem: Sendable, Equatable {
    /// Milliseconds since the Unix epoch.
    public var epochMilliseconds: Int64
    public var level: Logger.Level
    public var message: String
    /// The record's metadata, nested values in their swift-log description.
    public var metadata: [String: String]

    public init(
      epochMilliseconds: Int64, level: Logger.Level, message: String, metadata: [String: String]
    ) {
      self.epochMilliseconds = epochMilliseconds
      self.level = level
      self.message = message
      self.metadata = metadata
    }

    /// The time as RFC 3339 in UTC with milliseconds, as the JSON log writes it.
    public var time: String { JSONLogLine.timestamp(epochMilliseconds: epochMilliseconds) }
  }

  /// The process's records, which `/status` serves.
  public static let shared = RecentProblems()

  public let capacity: Int
  private let ring: Mutex<Ring>

  private struct Ring {
    var items: [Problem] = []
    /// Where the next record goes once `items` is full: the oldest one.
    var next = 0
  }

  public init(capacity: Int = 50) {
    self.capacity = max(1, capacity)
    ring = Mutex(Ring())
  }

  public func record(_ problem: Problem) {
    ring.withLock { r in
      if r.items.count < capacity {
        r.items.append(problem)
      } else {
        r.items[r.next] = problem
        r.next = (r.next + 1) % capacity
      }
    }
  }

  /// The records held, oldest first (newest last).
  public func snapshot() -> [Problem] {
    ring.withLock { r in Array(r.items[r.next...] + r.items[..<r.next]) }
  }
}

/// Tees log records at `warning` and above into ``RecentProblems``; prints nothing.
public struct RecentProblemsLogHandler: LogHandler {
  /// Records below `warning` are never kept, whatever this is set to.
  public var logLevel: Logger.Level = .warning
  public var metadata: Logger.Metadata = [:]
  public var metadataProvider: Logger.MetadataProvider?
  private let problems: RecentProblems

  public init(problems: RecentProblems = .shared) {
    self.problems = problems
  }

  public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
    get { metadata[key] }
    set { metadata[key] = newValue }
  }

  public func log(event: LogEvent) {
    guard event.level >= .warning else { return }
    let fields = LogMetadata.merge(
      base: metadata, provider: metadataProvider, explicit: event.metadata, error: event.error)
    problems.record(
      RecentProblems.Problem(
        epochMilliseconds: WallClock.epochMilliseconds(), level: event.level,
        message: event.message.description,
        metadata: fields.mapValues { value in
          if case .string(let s) = value { return s }
          return value.description
        }))
  }
}
