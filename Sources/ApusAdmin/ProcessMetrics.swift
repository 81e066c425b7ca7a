import CoreMetrics
import Foundation
import Synchronization

/// `apus_build_info`, `apus_uptime_seconds` and the `apus_process_*` gauges, read from
/// /proc when `/metrics` is scraped (nothing runs between scrapes).
final class ProcessMetrics: Sendable {
  let started = ContinuousClock.now
  private let uptime = Gauge(label: "apus_uptime_seconds")
  private let resident = Gauge(label: "apus_process_resident_memory_bytes")
  private let openFDs = Gauge(label: "apus_process_open_fds")
  private let cpu = FloatingPointCounter(label: "apus_process_cpu_seconds_total")
  private let cpuSeen = Mutex<Double>(0)

  init(version: String) {
    Gauge(label: "apus_build_info", dimensions: [("version", version)]).record(1)
  }

  var uptimeSeconds: Double {
    let d = ContinuousClock.now - started
    return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
  }

  func update() {
    uptime.record(uptimeSeconds)
    let pageSize = Double(sysconf(Int32(_SC_PAGESIZE)))
    let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
    if let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) {
      let fields = statm.split(separator: " ")
      if fields.count > 1, let pages = Double(fields[1]) { resident.record(pages * pageSize) }
    }
    if let fds = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") {
      openFDs.record(fds.count)
    }
    // /proc/self/stat: fields 14 and 15 (utime, stime) follow the command name in parentheses.
    if let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
      let close = stat.lastIndex(of: ")")
    {
      let fields = stat[stat.index(after: close)...].split(separator: " ")
      if fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) {
        let total = (user + system) / ticks
        let delta = cpuSeen.withLock { seen -> Double in
          defer { seen = max(seen, total) }
          return max(0, total - seen)
        }
        if delta > 0 { cpu.increment(by: delta) }
      }
    }
  }
}
