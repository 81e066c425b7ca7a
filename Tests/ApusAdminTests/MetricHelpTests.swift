import Testing

@testable import ApusAdmin

@Suite("Metric help")
struct MetricHelpTests {
  @Test("a HELP line goes before each TYPE line of a known family; others are left as they are")
  func annotate() {
    let rendered = "# TYPE apus_uptime_seconds gauge\napus_uptime_seconds 3.0\n# TYPE other_thing counter\nother_thing 1\n"
    let out = String(decoding: MetricHelp.annotate(Array(rendered.utf8)), as: UTF8.self)
    #expect(
      out == "# HELP apus_uptime_seconds Seconds since the process started.\n" + rendered)
  }
}
