import NIOCore
import Testing

@testable import ApusRPC

/// The rapid-reset limit and the protocol log limit: a burst, then a steady rate.
@Suite("Token bucket", .timeLimit(.minutes(1)))
struct TokenBucketTests {
  @Test("a burst, then the rate")
  func burstThenRate() {
    var bucket = TokenBucket(burst: 3, perSecond: 2)
    let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
    #expect((0..<4).map { _ in bucket.take(now: start) } == [true, true, true, false])
    #expect(bucket.take(now: start + .milliseconds(400)) == false)  // 0.8 of a token
    #expect(bucket.take(now: start + .milliseconds(500)) == true)
    #expect(bucket.take(now: start + .milliseconds(500)) == false)
    // Never more than the burst, however long it rested.
    let later = start + .seconds(3600)
    #expect((0..<4).map { _ in bucket.take(now: later) } == [true, true, true, false])
  }

  @Test("the log limit says how many lines it left out")
  func logLimit() {
    let limit = ProtocolLogLimit(burst: 2, perSecond: 1)
    let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
    #expect(limit.admit(now: start) == 0)
    #expect(limit.admit(now: start) == 0)
    #expect(limit.admit(now: start) == nil)
    #expect(limit.admit(now: start) == nil)
    #expect(limit.admit(now: start + .seconds(1)) == 2)
    #expect(limit.admit(now: start + .seconds(1)) == nil)
  }

  @Test("the reset limit allows a client to cancel every call it may have open, twice")
  func resetBurst() {
    var options = GRPCServerOptions()
    #expect(HTTP2Connection.resetBurst(options) == 2000)
    options.maxConcurrentStreams = 100
    #expect(HTTP2Connection.resetBurst(options) == 1000)
  }

  @Test("HTTP/2 error code names")
  func codeNames() {
    #expect(HTTP2Connection.codeName(0) == "NO_ERROR")
    #expect(HTTP2Connection.codeName(2) == "INTERNAL_ERROR")
    #expect(HTTP2Connection.codeName(11) == "ENHANCE_YOUR_CALM")
    #expect(HTTP2Connection.codeName(0x99) == "0x99")
  }
}
