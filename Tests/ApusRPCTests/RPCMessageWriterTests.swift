import Testing

@testable import ApusRPC

@Suite("Response framing", .timeLimit(.minutes(3)))
struct RPCMessageWriterTests {
  @Test("a message is framed in one buffer of the exact size", arguments: [0, 1, 255, 256, 70_000])
  func framed(length: Int) throws {
    let message = (0..<length).map { UInt8(truncatingIfNeeded: $0 * 7) }
    let framed = RPCMessageWriter.framed(message)
    #expect(framed == grpcMessagePrefix(length: length) + message)
    var deframer = GRPCMessageDeframer(maxMessageBytes: 1 << 20)
    let messages = try framed.withUnsafeBytes { try deframer.append($0) }
    #expect(messages.map(\.payload) == [message])
    #expect(messages.map(\.compressed) == [false])
  }
}
