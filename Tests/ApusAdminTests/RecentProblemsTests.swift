import ApusConfig
import Logging
import Testing

@testable import ApusAdmin

/// `/status` `recent_errors`: the last 50 records at warning or above, newest last.
@Suite("Recent problems", .timeLimit(.minutes(1)))
struct RecentProblemsTests {
  func problem(_ i: Int) -> RecentProblems.Problem {
    .init(epochMilliseconds: Int64(i), level: .warning, message: "problem \(i)", metadata: [:])
  }

  @Test("keeps the 50 newest, newest last")
  func ring() {
    let problems = RecentProblems()
    #expect(problems.snapshot().isEmpty)
    for i in 0..<3 { problems.record(problem(i)) }
    #expect(problems.snapshot().map(\.message) == ["problem 0", "problem 1", "problem 2"])
    for i in 3..<123 { problems.record(problem(i)) }
    let kept = problems.snapshot()
    #expect(kept.count == 50)
    #expect(kept.map(\.message) == (73..<123).map { "problem \($0)" })
  }

  @Test("exactly full, then one more")
  func wrap() {
    let problems = RecentProblems(capacity: 3)
    for i in 0..<3 { problems.record(problem(i)) }
    #expect(problems.snapshot().map(\.epochMilliseconds) == [0, 1, 2])
    problems.record(problem(3))
    #expect(problems.snapshot().map(\.epochMilliseconds) == [1, 2, 3])
  }

  @Test("the bootstrap's handler keeps warnings and above, whatever the level and format", arguments: [
    (Logger.Level.info, GlobalConfig.LogFormat.text), (.error, .json),
  ])
  func teed(level: Logger.Level, format: GlobalConfig.LogFormat) {
    let problems = RecentProblems()
    let handler = LogBootstrap.makeHandler(label: "apus", level: level, format: format, problems: problems)
    let logger = Logger(label: "apus", factory: { _ in handler })
    logger.info("fine")
    logger.warning("disk slow", metadata: ["store": "cas", "nested": ["a": "b"]])
    logger.critical("gone")
    let kept = problems.snapshot()
    #expect(kept.map(\.message) == ["disk slow", "gone"])
    #expect(kept.map(\.level) == [.warning, .critical])
    #expect(kept.first?.metadata == ["store": "cas", "nested": #"["a": "b"]"#])
    #expect(kept.first?.time.hasSuffix("Z") == true)
  }
}
