import NIOCore
import Testing

@testable import ApusRPC

/// The outbound queue as nghttp2's data source sees it, without sockets: `peek` sizes the
/// next DATA frame, `take` copies exactly that many bytes when the frame is sent.
@Suite("Outbound queue", .timeLimit(.minutes(1)))
struct OutboundQueueTests {
  @Test("peek sizes a frame without taking; take copies across slice boundaries")
  func peekAndTake() async throws {
    let queue = OutboundQueue(highWater: 1 << 20, wake: { _ in })
    let whole = (0..<100).map { UInt8($0) }
    try await queue.write([whole[0..<10], whole[10..<11], whole[11..<60]])
    guard case .data(25) = queue.peek(capacity: 25) else { Issue.record("peek"); return }
    guard case .data(25) = queue.peek(capacity: 25) else { Issue.record("peek again"); return }
    var buffer = ByteBuffer()
    #expect(queue.take(25, into: &buffer))
    #expect(queue.take(5, into: &buffer))
    #expect(buffer.readableBytesView.elementsEqual(whole[0..<30]))
    guard case .data(30) = queue.peek(capacity: 1000) else { Issue.record("rest"); return }
    #expect(queue.take(30, into: &buffer))
    guard case .deferred = queue.peek(capacity: 1000) else { Issue.record("empty"); return }
    try await queue.write([whole[60...]])
    queue.finish(CallStatus())
    guard case .data(16) = queue.peek(capacity: 16) else { Issue.record("not all fits"); return }
    guard case .end(40, let status) = queue.peek(capacity: 40), status.error == nil else {
      Issue.record("end")
      return
    }
    #expect(queue.take(40, into: &buffer))
    #expect(buffer.readableBytesView.elementsEqual(whole))
  }

  @Test("a queue closed between peek and take appends nothing")
  func closedBetween() async throws {
    let queue = OutboundQueue(highWater: 1 << 20, wake: { _ in })
    try await queue.write([[1, 2, 3, 4][...]])
    guard case .data(4) = queue.peek(capacity: 10) else { Issue.record("peek"); return }
    queue.close(RPCError(.cancelled, "reset"))
    var buffer = ByteBuffer(bytes: [9])
    #expect(!queue.take(4, into: &buffer))
    #expect(Array(buffer.readableBytesView) == [9])
  }

  @Test("a writer over the high-water mark resumes once take drains to half of it")
  func backPressure() async throws {
    let queue = OutboundQueue(highWater: 100, wake: { _ in })
    let writer = Task { try await queue.write([[UInt8](repeating: 1, count: 150)[...]]) }
    var buffer = ByteBuffer()
    while case .deferred = queue.peek(capacity: 1) { try await Task.sleep(for: .milliseconds(5)) }
    // 60 left is above half the mark; 40 releases the writer.
    #expect(queue.take(90, into: &buffer))
    #expect(queue.take(20, into: &buffer))
    try await writer.value
    #expect(buffer.readableBytes == 110)
  }
}
