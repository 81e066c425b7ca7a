import ApusConfig
import Logging

/// Sets up the process's logging from `global`: records at `level` and above to stderr as
/// text or JSON lines, and every record at `warning` and above into ``RecentProblems``
/// (even when `level` is `error` or `critical`), for `/status`.
public enum LogBootstrap {
  /// Call once, before the first `Logger` is made.
  public static func bootstrap(
    level: Logger.Level, format: GlobalConfig.LogFormat, problems: RecentProblems = .shared
  ) {
    LoggingSystem.bootstrap { label in
      makeHandler(label: label, level: level, format: format, problems: problems)
    }
  }

  static func makeHandler(
    label: String, level: Logger.Level, format: GlobalConfig.LogFormat, problems: RecentProblems
  ) -> any LogHandler {
    var output: any LogHandler =
      switch format {
      case .text: StreamLogHandler.standardError(label: label)
      case .json: JSONLogHandler(label: label)
      }
    output.logLevel = level
    return MultiplexLogHandler([output, RecentProblemsLogHandler(problems: problems)])
  }
}
