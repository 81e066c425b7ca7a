import Testing

@testable import ApusStore

@Suite("S3 signing", .timeLimit(.minutes(3)))
struct S3SignerTests {
  @Test("HMAC-SHA256 matches RFC 4231 test case 2")
  func hmacVector() {
    let mac = hmac(Array("Jefe".utf8), Array("what do ya want for nothing?".utf8))
    #expect(hex(mac) == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
  }

  /// The GET Object example of AWS's "Signature Calculations for the Authorization Header"
  /// page (range request, empty payload), whose published signature is the reference.
  @Test("SigV4 matches AWS's published GetObject example")
  func awsExample() {
    let signer = S3Signer(region: "us-east-1")
    let keys = AWSCredentials(
      accessKeyID: "AKIAIOSFODNN7EXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
      sessionToken: nil)
    let headers = signer.sign(
      keys, method: "GET", host: "examplebucket.s3.amazonaws.com", path: "/test.txt", query: [],
      payloadSHA256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
      extraHeaders: [("range", "bytes=0-9")], now: 1_369_353_600)  // 2013-05-24T00:00:00Z
    let auth = headers.first { $0.0 == "authorization" }?.1
    #expect(
      auth
        == "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )
  }

  @Test("a session token is sent and signed")
  func sessionToken() {
    let keys = AWSCredentials(accessKeyID: "AKID", secretAccessKey: "secret", sessionToken: "tok")
    let headers = S3Signer(region: "eu-west-1").sign(
      keys, method: "HEAD", host: "h", path: "/", query: [], payloadSHA256: "x", now: 1_369_353_600)
    #expect(headers.first { $0.0 == "x-amz-security-token" }?.1 == "tok")
    let auth = headers.first { $0.0 == "authorization" }?.1 ?? ""
    #expect(auth.hasPrefix("AWS4-HMAC-SHA256 Credential=AKID/20130524/eu-west-1/s3/aws4_request"))
    #expect(auth.contains("x-amz-security-token"))
    #expect(!auth.contains("secret"))
  }
}

@Suite("S3 dates", .timeLimit(.minutes(3)))
struct HTTPDatesTests {
  @Test("ISO 8601 and RFC 1123 timestamps", arguments: [
    ("2013-05-24T00:00:00.000Z", Int64(1_369_353_600)), ("1970-01-01T00:00:00Z", 0),
    ("2026-11-22T19:30:05.123Z", 1_795_375_805),
  ])
  func iso(text: String, seconds: Int64) {
    #expect(HTTPDates.iso8601(text) == seconds)
  }

  @Test("RFC 1123")
  func rfc() {
    #expect(HTTPDates.rfc1123("Fri, 24 May 2013 00:00:00 GMT") == 1_369_353_600)
    #expect(HTTPDates.rfc1123("Sun, 22 Nov 2026 19:30:05 GMT") == 1_795_375_805)
    #expect(HTTPDates.rfc1123("garbage") == nil)
    #expect(HTTPDates.iso8601("2026-13-01T00:00:00Z") == nil)
  }
}
