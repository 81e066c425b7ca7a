/// Parses the two timestamp forms S3 sends, to seconds since the Unix epoch (UTC).
enum HTTPDates {
  /// `2026-11-22T19:30:00.000Z` (ListObjectsV2 LastModified).
  static func iso8601(_ s: String) -> Int64? {
    let b = Array(s.utf8)
    guard b.count >= 19, b[4] == UInt8(ascii: "-"), b[7] == UInt8(ascii: "-"), b[10] == UInt8(ascii: "T")
    else { return nil }
    guard let y = number(b, 0, 4), let mo = number(b, 5, 2), let d = number(b, 8, 2),
      let h = number(b, 11, 2), let mi = number(b, 14, 2), let se = number(b, 17, 2)
    else { return nil }
    return seconds(year: y, month: mo, day: d, hour: h, minute: mi, second: se)
  }

  /// `Sun, 22 Nov 2026 19:30:00 GMT` (the Last-Modified header).
  static func rfc1123(_ s: String) -> Int64? {
    let parts = s.split(separator: " ")
    guard parts.count >= 5, let day = Int64(parts[1]), let year = Int64(parts[3]),
      let month = months.firstIndex(of: String(parts[2]))
    else { return nil }
    let time = parts[4].split(separator: ":").compactMap { Int64($0) }
    guard time.count == 3 else { return nil }
    return seconds(year: year, month: Int64(month + 1), day: day, hour: time[0], minute: time[1], second: time[2])
  }

  static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

  private static func number(_ b: [UInt8], _ start: Int, _ count: Int) -> Int64? {
    var n: Int64 = 0
    for c in b[start..<(start + count)] {
      guard c >= UInt8(ascii: "0"), c <= UInt8(ascii: "9") else { return nil }
      n = n * 10 + Int64(c - UInt8(ascii: "0"))
    }
    return n
  }

  /// Days from 1970-01-01 to a civil date (Howard Hinnant's algorithm), then seconds.
  static func seconds(year: Int64, month: Int64, day: Int64, hour: Int64, minute: Int64, second: Int64) -> Int64? {
    guard (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60, second < 61 else { return nil }
    let y = month <= 2 ? year - 1 : year
    let era = (y >= 0 ? y : y - 399) / 400
    let yoe = y - era * 400
    let mp = (month + 9) % 12
    let doy = (153 * mp + 2) / 5 + day - 1
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
    let days = era * 146_097 + doe - 719_468
    return days * 86_400 + hour * 3600 + minute * 60 + second
  }
}
