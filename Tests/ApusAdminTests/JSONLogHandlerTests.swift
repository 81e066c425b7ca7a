import Foundation
import Logging
import Testing

@testable import ApusAdmin

/// `log_format: json`: each record is one line holding one JSON object with the fixed
/// fields and the metadata, escaped as JSON requires.
@Suite("JSON log lines", .timeLimit(.minutes(1)))
struct JSONLogHandlerTests {
  func object(_ line: [UInt8]) throws -> [String: Any] {
    #expect(line.last == UInt8(ascii: "\n"))
    #expect(line.dropLast().contains(UInt8(ascii: "\n")) == false)
    return try #require(try JSONSerialization.jsonObject(with: Data(line)) as? [String: Any])
  }

  @Test("fixed fields, metadata as string fields, nested metadata as objects and arrays")
  func fields() throws {
    let line = JSONLogLine.format(
      epochMilliseconds: 1_795_811_467_123, level: .warning, label: "apus", message: "call failed",
      source: "ApusRPC",
      metadata: [
        "path": "/x.Y/Z", "count": .stringConvertible(3),
        "nested": ["a": "1", "b": ["x", "y"]], "message": "shadowed", "source": "shadowed too",
      ])
    let o = try object(line)
    #expect(o["time"] as? String == "2026-11-27T20:31:07.123Z")
    #expect(o["level"] as? String == "warning")
    #expect(o["label"] as? String == "apus")
    #expect(o["message"] as? String == "call failed")
    #expect(o["source"] as? String == "ApusRPC")
    #expect(o["metadata.message"] as? String == "shadowed")
    #expect(o["metadata.source"] as? String == "shadowed too")
    #expect(o["path"] as? String == "/x.Y/Z")
    #expect(o["count"] as? String == "3")
    let nested = try #require(o["nested"] as? [String: Any])
    #expect(nested["a"] as? String == "1")
    #expect(nested["b"] as? [String] == ["x", "y"])
    #expect(o.count == 10)
    // Keys in a fixed order: the fixed fields, then the metadata sorted by key.
    #expect(
      String(decoding: line, as: UTF8.self) == (
        #"{"time":"2026-11-27T20:31:07.123Z","level":"warning","label":"apus","message":"call failed","source":"ApusRPC","count":"3","metadata.message":"shadowed","nested":{"a":"1","b":["x","y"]},"path":"/x.Y/Z","metadata.source":"shadowed too"}"# + "\n"))
  }

  @Test("quotes, backslashes and control characters are escaped; other characters stay UTF-8")
  func escaping() throws {
    let nasty = "a \"quoted\" \\ path\nnext\tline\r\u{01}\u{1F}\u{7F} é ✓ 😀"
    let line = JSONLogLine.format(
      epochMilliseconds: 0, level: .error, label: "l\"abel", message: nasty, metadata: ["k\n": .string(nasty)])
    let text = String(decoding: line, as: UTF8.self)
    #expect(text.contains(#""message":"a \"quoted\" \\ path\nnext\tline\r\u0001\u001f\u007f é ✓ 😀""#))
    let o = try object(line)
    #expect(o["message"] as? String == nasty)
    #expect(o["k\n"] as? String == nasty)
    #expect(o["label"] as? String == "l\"abel")
    #expect(o["time"] as? String == "1970-01-01T00:00:00.000Z")
  }

  @Test(
    "RFC 3339 UTC with milliseconds",
    arguments: [
      (Int64(0), "1970-01-01T00:00:00.000Z"), (951_782_400_999, "2000-02-29T00:00:00.999Z"),
      (4_102_444_799_000, "2099-12-31T23:59:59.000Z"), (1_795_811_467_123, "2026-11-27T20:31:07.123Z"),
    ])
  func timestamps(milliseconds: Int64, expected: String) {
    #expect(JSONLogLine.timestamp(epochMilliseconds: milliseconds) == expected)
  }

  @Test("the handler writes whole lines to its file descriptor, with its own and the call's metadata")
  func handlerWritesToAPipe() throws {
    var fds: [Int32] = [0, 0]
    #expect(pipe(&fds) == 0)
    defer { close(fds[0]) }
    var handler = JSONLogHandler(label: "test", output: LogOutput(fileDescriptor: fds[1]))
    handler.logLevel = .debug
    handler[metadataKey: "service"] = "cas"
    var logger = Logger(label: "test", factory: { _ in handler })
    logger[metadataKey: "instance"] = "main"
    logger.debug("one", metadata: ["n": "1"])
    logger.trace("not written")
    logger.error("two \"2\"", metadata: ["service": "ac"])
    close(fds[1])
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while case let n = read(fds[0], &buffer, buffer.count), n > 0 { bytes += buffer[..<n] }
    let lines = bytes.split(separator: UInt8(ascii: "\n"))
    #expect(lines.count == 2)
    let first = try object(Array(lines[0]) + [UInt8(ascii: "\n")])
    #expect(first["message"] as? String == "one")
    #expect(first["level"] as? String == "debug")
    #expect(first["label"] as? String == "test")
    #expect(first["service"] as? String == "cas")
    #expect(first["instance"] as? String == "main")
    #expect(first["n"] as? String == "1")
    #expect(first["source"] as? String == "ApusAdminTests")
    let second = try object(Array(lines[1]) + [UInt8(ascii: "\n")])
    #expect(second["message"] as? String == "two \"2\"")
    #expect(second["service"] as? String == "ac")
  }
}
