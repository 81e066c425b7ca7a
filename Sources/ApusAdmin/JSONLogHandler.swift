import Logging
import Synchronization

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// A `LogHandler` writing one JSON object per line to stderr (`global.log_format: json`),
/// for log shippers such as Loki or CloudWatch.
///
/// Each line is `{"time", "level", "label", "message", "source", …metadata}` (see
/// ``JSONLogLine``),
/// written with one `write(2)` under a process-wide lock, so lines from different threads
/// never interleave.
public struct JSONLogHandler: LogHandler {
  public var logLevel: Logger.Level = .info
  public var metadata: Logger.Metadata = [:]
  public var metadataProvider: Logger.MetadataProvider?
  private let label: String
  private let output: LogOutput

  public init(label: String, metadataProvider: Logger.MetadataProvider? = nil) {
    self.init(label: label, output: .standardError, metadataProvider: metadataProvider)
  }

  init(label: String, output: LogOutput, metadataProvider: Logger.MetadataProvider? = nil) {
    self.label = label
    self.output = output
    self.metadataProvider = metadataProvider
  }

  public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
    get { metadata[key] }
    set { metadata[key] = newValue }
  }

  public func log(event: LogEvent) {
    let fields = LogMetadata.merge(
      base: metadata, provider: metadataProvider, explicit: event.metadata, error: event.error)
    output.write(
      JSONLogLine.format(
        epochMilliseconds: WallClock.epochMilliseconds(), level: event.level, label: label,
        message: event.message.description, source: event.source, metadata: fields))
  }
}

/// The metadata of one record: the handler's, then its provider's, then the call's (later
/// ones win), and the error as swift-log's `StreamLogHandler` shows it.
enum LogMetadata {
  static func merge(
    base: Logger.Metadata, provider: Logger.MetadataProvider?, explicit: Logger.Metadata?,
    error: (any Error)?
  ) -> Logger.Metadata {
    var merged = base
    if let provided = provider?.get(), !provided.isEmpty {
      merged.merge(provided) { _, new in new }
    }
    if let explicit, !explicit.isEmpty { merged.merge(explicit) { _, new in new } }
    if let error {
      merged["error.message"] = "\(error)"
      merged["error.type"] = "\(String(reflecting: type(of: error)))"
    }
    return merged
  }
}

/// Formats one JSON log line: pure, so tests check the exact bytes.
///
/// `time` is RFC 3339 in UTC with milliseconds (`2026-11-27T20:41:07.123Z`); `source` is the
/// module that logged (the text format's `[ApusRPC]`). Metadata keys follow as top-level
/// fields, sorted, their values strings, except that nested metadata stays nested (a
/// dictionary as an object, an array as an array). A metadata key equal to one of the fixed
/// fields is written as `metadata.KEY`. Strings are escaped as JSON requires
/// (quotes, backslashes, control characters); other characters stay as UTF-8.
public enum JSONLogLine {
  static let fixedFields: Set<String> = ["time", "level", "label", "message", "source"]

  public static func format(
    epochMilliseconds: Int64, level: Logger.Level, label: String, message: String,
    source: String? = nil, metadata: Logger.Metadata
  ) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(128 + message.utf8.count)
    out += #"{"time":""#.utf8
    appendTimestamp(epochMilliseconds, to: &out)
    out += #"","level":""#.utf8
    out += level.rawValue.utf8
    out += #"","label":"#.utf8
    appendString(label, to: &out)
    out += #","message":"#.utf8
    appendString(message, to: &out)
    if let source {
      out += #","source":"#.utf8
      appendString(source, to: &out)
    }
    for key in metadata.keys.sorted() {
      out.append(UInt8(ascii: ","))
      appendString(fixedFields.contains(key) ? "metadata.\(key)" : key, to: &out)
      out.append(UInt8(ascii: ":"))
      // The key came from the dictionary: the value is there.
      if let value = metadata[key] { appendValue(value, to: &out) }
    }
    out += "}\n".utf8
    return out
  }

  /// RFC 3339, UTC, milliseconds: `2026-11-27T20:41:07.123Z`.
  public static func timestamp(epochMilliseconds: Int64) -> String {
    var out: [UInt8] = []
    appendTimestamp(epochMilliseconds, to: &out)
    return String(decoding: out, as: UTF8.self)
  }

  static func appendValue(_ value: Logger.MetadataValue, to out: inout [UInt8]) {
    switch value {
    case .string(let s): appendString(s, to: &out)
    case .stringConvertible(let c): appendString(c.description, to: &out)
    case .dictionary(let d):
      out.append(UInt8(ascii: "{"))
      for (i, key) in d.keys.sorted().enumerated() {
        if i > 0 { out.append(UInt8(ascii: ",")) }
        appendString(key, to: &out)
        out.append(UInt8(ascii: ":"))
        if let v = d[key] { appendValue(v, to: &out) }
      }
      out.append(UInt8(ascii: "}"))
    case .array(let a):
      out.append(UInt8(ascii: "["))
      for (i, v) in a.enumerated() {
        if i > 0 { out.append(UInt8(ascii: ",")) }
        appendValue(v, to: &out)
      }
      out.append(UInt8(ascii: "]"))
    }
  }

  static func appendString(_ string: String, to out: inout [UInt8]) {
    let hex = Array("0123456789abcdef".utf8)
    out.append(UInt8(ascii: "\""))
    for byte in string.utf8 {
      switch byte {
      case UInt8(ascii: "\""): out += [UInt8(ascii: "\\"), UInt8(ascii: "\"")]
      case UInt8(ascii: "\\"): out += [UInt8(ascii: "\\"), UInt8(ascii: "\\")]
      case 0x0A: out += [UInt8(ascii: "\\"), UInt8(ascii: "n")]
      case 0x0D: out += [UInt8(ascii: "\\"), UInt8(ascii: "r")]
      case 0x09: out += [UInt8(ascii: "\\"), UInt8(ascii: "t")]
      case 0x00..<0x20, 0x7F:
        out += [UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0")]
        out += [hex[Int(byte >> 4)], hex[Int(byte & 0xF)]]
      default: out.append(byte)
      }
    }
    out.append(UInt8(ascii: "\""))
  }

  static func appendTimestamp(_ epochMilliseconds: Int64, to out: inout [UInt8]) {
    let (seconds, millis) = epochMilliseconds.quotientAndRemainder(dividingBy: 1000)
    let (days, secondOfDay) = seconds.quotientAndRemainder(dividingBy: 86_400)
    let (year, month, day) = civilDate(daysSinceEpoch: days)
    func digits(_ value: Int64, _ width: Int) {
      var divisor: Int64 = 1
      for _ in 1..<width { divisor *= 10 }
      var v = value
      while divisor > 0 {
        out.append(UInt8(ascii: "0") + UInt8(v / divisor % 10))
        v %= divisor
        divisor /= 10
      }
    }
    digits(year, 4)
    out.append(UInt8(ascii: "-"))
    digits(month, 2)
    out.append(UInt8(ascii: "-"))
    digits(day, 2)
    out.append(UInt8(ascii: "T"))
    digits(secondOfDay / 3600, 2)
    out.append(UInt8(ascii: ":"))
    digits(secondOfDay / 60 % 60, 2)
    out.append(UInt8(ascii: ":"))
    digits(secondOfDay % 60, 2)
    out.append(UInt8(ascii: "."))
    digits(millis, 3)
    out.append(UInt8(ascii: "Z"))
  }

  /// Proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's
  /// `civil_from_days`), for non-negative counts.
  static func civilDate(daysSinceEpoch: Int64) -> (year: Int64, month: Int64, day: Int64) {
    let z = daysSinceEpoch + 719_468
    let era = z / 146_097
    let dayOfEra = z - era * 146_097
    let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
    let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
    let mp = (5 * dayOfYear + 2) / 153
    let day = dayOfYear - (153 * mp + 2) / 5 + 1
    let month = mp < 10 ? mp + 3 : mp - 9
    return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
  }
}

/// The wall clock in milliseconds since the Unix epoch.
enum WallClock {
  static func epochMilliseconds() -> Int64 {
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
  }
}

/// A file descriptor log lines go to, one whole line per `write(2)`, one writer at a time.
final class LogOutput: Sendable {
  static let standardError = LogOutput(fileDescriptor: 2)

  let fileDescriptor: Int32
  private let lock = Mutex(())

  init(fileDescriptor: Int32) { self.fileDescriptor = fileDescriptor }

  func write(_ line: [UInt8]) {
    lock.withLock { _ in
      line.withUnsafeBytes { bytes in
        guard let base = bytes.baseAddress else { return }
        var offset = 0
        // One write(2) for the whole line; a short write (a full pipe, a signal) goes on
        // from where it stopped, still under the lock.
        while offset < bytes.count {
          #if canImport(Glibc)
            let n = Glibc.write(fileDescriptor, base + offset, bytes.count - offset)
          #else
            let n = Darwin.write(fileDescriptor, base + offset, bytes.count - offset)
          #endif
          if n > 0 {
            offset += n
          } else if n < 0 && errno == EINTR {
            continue
          } else {
            return
          }
        }
      }
    }
  }
}
