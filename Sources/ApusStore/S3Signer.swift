#if canImport(Glibc)
  import Glibc
#endif

/// AWS Signature Version 4 for S3 requests (header-based, with the payload's SHA-256).
/// The keys are passed per request: they rotate (``S3CredentialsProvider``).
struct S3Signer: Sendable {
  let region: String

  /// Headers to add: `x-amz-date`, `x-amz-content-sha256`, optional
  /// `x-amz-security-token`, and `authorization`.
  func sign(
    _ credentials: AWSCredentials, method: String, host: String, path: String, query: [(String, String)],
    payloadSHA256: String, extraHeaders: [(String, String)] = [], now: time_t = time(nil)
  ) -> [(String, String)] {
    let (amzDate, dateStamp) = Self.timestamps(now)
    var headers = [("host", host), ("x-amz-content-sha256", payloadSHA256), ("x-amz-date", amzDate)]
    if let sessionToken = credentials.sessionToken { headers.append(("x-amz-security-token", sessionToken)) }
    headers += extraHeaders.map { ($0.0.lowercased(), $0.1) }
    headers.sort { $0.0 < $1.0 }
    let canonicalQuery = query.map { (Self.encode($0.0), Self.encode($0.1)) }
      .sorted { $0 < $1 }.map { "\($0.0)=\($0.1)" }.joined(separator: "&")
    let canonicalHeaders = headers.map { "\($0.0):\($0.1.trimmingSpaces)\n" }.joined()
    let signedHeaders = headers.map(\.0).joined(separator: ";")
    let canonicalRequest = [
      method, Self.encode(path, keepSlash: true), canonicalQuery, canonicalHeaders, signedHeaders,
      payloadSHA256,
    ].joined(separator: "\n")
    let scope = "\(dateStamp)/\(region)/s3/aws4_request"
    let stringToSign = [
      "AWS4-HMAC-SHA256", amzDate, scope, hex(SHA256Hasher.digest(of: Array(canonicalRequest.utf8)).hashBytes),
    ].joined(separator: "\n")
    var key = hmac(Array("AWS4\(credentials.secretAccessKey)".utf8), Array(dateStamp.utf8))
    key = hmac(key, Array(region.utf8))
    key = hmac(key, Array("s3".utf8))
    key = hmac(key, Array("aws4_request".utf8))
    let signature = hex(hmac(key, Array(stringToSign.utf8)))
    let authorization =
      "AWS4-HMAC-SHA256 Credential=\(credentials.accessKeyID)/\(scope), SignedHeaders=\(signedHeaders), Signature=\(signature)"
    return headers.filter { $0.0 != "host" } + [("authorization", authorization)]
  }

  /// `20261122T193000Z` and `20261122`.
  static func timestamps(_ now: time_t) -> (String, String) {
    var t = now
    var parts = tm()
    gmtime_r(&t, &parts)
    var buffer = [CChar](repeating: 0, count: 32)
    let n = strftime(&buffer, buffer.count, "%Y%m%dT%H%M%SZ", &parts)
    let amzDate = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return (amzDate, String(amzDate.prefix(8)))
  }

  /// RFC 3986 percent-encoding of everything but unreserved characters (and `/` in paths).
  static func encode(_ s: String, keepSlash: Bool = false) -> String {
    var out = ""
    for byte in s.utf8 {
      switch byte {
      case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
        UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."),
        UInt8(ascii: "_"), UInt8(ascii: "~"):
        out.unicodeScalars.append(Unicode.Scalar(byte))
      case UInt8(ascii: "/") where keepSlash:
        out.append("/")
      default:
        out += "%" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
      }
    }
    return out
  }
}

/// HMAC-SHA256 (RFC 2104) on our SHA-256.
func hmac(_ key: [UInt8], _ message: [UInt8]) -> [UInt8] {
  var k = key.count > 64 ? SHA256Hasher.digest(of: key).hashBytes : key
  k += [UInt8](repeating: 0, count: 64 - k.count)
  let inner = SHA256Hasher()
  inner.update(k.map { $0 ^ 0x36 })
  inner.update(message)
  let outer = SHA256Hasher()
  outer.update(k.map { $0 ^ 0x5C })
  outer.update(inner.finish())
  return outer.finish()
}

func hex(_ bytes: [UInt8]) -> String {
  bytes.map { String($0, radix: 16).leftPadded(to: 2) }.joined()
}

extension String {
  fileprivate func leftPadded(to width: Int) -> String {
    count >= width ? self : String(repeating: "0", count: width - count) + self
  }

  fileprivate var trimmingSpaces: String {
    var s = Substring(self)
    while s.first == " " { s = s.dropFirst() }
    while s.last == " " { s = s.dropLast() }
    return String(s)
  }
}
