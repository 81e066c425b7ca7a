import ApusStore

/// The token file: lines `<sha256 hex of the token> <principal>`, blank lines and `#`
/// comments allowed. Only hashes are kept, so the file reveals no token.
public struct TokenFile: Sendable, Equatable {
  public struct Entry: Sendable, Equatable {
    /// SHA-256 of the token's UTF-8 bytes.
    public var hash: [UInt8]
    public var principal: String
  }

  /// A line that is not `<hash> <principal>`; `line` counts from 1.
  public struct ParseError: Error, Sendable, Equatable, CustomStringConvertible {
    public var line: Int
    public var message: String
    public var description: String { "line \(line): \(message)" }
  }

  public var entries: [Entry]

  public init(entries: [Entry]) { self.entries = entries }

  public init(parsing text: String) throws(ParseError) {
    var entries: [Entry] = []
    for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
      let line = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
      let fields = line.split(whereSeparator: \.isWhitespace)
      if fields.isEmpty { continue }
      guard fields.count == 2 else {
        throw ParseError(line: i + 1, message: "expected \"<sha256 hex of the token> <principal>\"")
      }
      guard let hash = Self.hexBytes(fields[0]), hash.count == 32 else {
        throw ParseError(line: i + 1, message: "the hash is not 64 hex digits (SHA-256)")
      }
      let principal = String(fields[1])
      guard principal != "anonymous" else {
        throw ParseError(line: i + 1, message: "\"anonymous\" is the name of calls without credentials")
      }
      entries.append(Entry(hash: hash, principal: principal))
    }
    self.entries = entries
  }

  /// The principal whose token is `token`, comparing against every entry in constant time.
  public func principal(for token: String) -> String? {
    let hash = Self.hash(token)
    var found: String?
    for entry in entries where ConstantTime.equal(entry.hash, hash) && found == nil {
      found = entry.principal
    }
    return found
  }

  public static func hash(_ token: String) -> [UInt8] {
    let hasher = SHA256Hasher()
    hasher.update(Array(token.utf8))
    return hasher.finish()
  }

  /// The token file line for `token`.
  public static func line(token: String, principal: String) -> String {
    "\(hex(hash(token))) \(principal)"
  }

  static func hex(_ bytes: [UInt8]) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out: [UInt8] = []
    out.reserveCapacity(bytes.count * 2)
    for b in bytes {
      out.append(digits[Int(b >> 4)])
      out.append(digits[Int(b & 15)])
    }
    return String(decoding: out, as: UTF8.self)
  }

  static func hexBytes(_ s: Substring) -> [UInt8]? {
    let chars = Array(s.utf8)
    guard chars.count % 2 == 0 else { return nil }
    func nibble(_ c: UInt8) -> UInt8? {
      switch c {
      case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
      case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
      case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
      default: nil
      }
    }
    var out: [UInt8] = []
    for i in stride(from: 0, to: chars.count, by: 2) {
      guard let hi = nibble(chars[i]), let lo = nibble(chars[i + 1]) else { return nil }
      out.append(hi << 4 | lo)
    }
    return out
  }
}

/// Comparisons whose time does not depend on where the inputs differ.
public enum ConstantTime {
  /// Equal length and bytes; only the length leaks through timing.
  public static func equal(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    var diff: UInt8 = 0
    for i in a.indices { diff |= a[i] ^ b[i] }
    return diff == 0
  }
}
