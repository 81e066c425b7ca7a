import Foundation
import NIOHTTP1

/// One answer of the admin listener: status, content type and body.
struct AdminResponse: Sendable {
  var status: HTTPResponseStatus
  var contentType: String
  var body: [UInt8]
  var headers: [(String, String)] = []

  static func json(_ value: some Encodable, status: HTTPResponseStatus = .ok) -> AdminResponse {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    let body = (try? encoder.encode(value)).map { Array($0) } ?? Array(#"{"error":"encoding failed"}"#.utf8)
    return AdminResponse(status: status, contentType: "application/json", body: body + [0x0A])
  }

  /// Every error is a JSON body `{"error": "…"}`.
  static func error(_ status: HTTPResponseStatus, _ message: String) -> AdminResponse {
    json(["error": message], status: status)
  }

  static func text(_ text: String, contentType: String) -> AdminResponse {
    AdminResponse(status: .ok, contentType: contentType, body: Array(text.utf8))
  }
}
