/// Splits the bytes of a gRPC request body into length-prefixed messages.
///
/// The body is a sequence of `flag(1) length(4, big-endian) payload`; DATA frame boundaries
/// bear no relation to message boundaries. A declared length above `maxMessageBytes` is
/// rejected before any of its payload is buffered.
public struct GRPCMessageDeframer: Sendable {
  /// One framed message: the compressed flag and its payload.
  public struct Message: Sendable, Equatable {
    public var compressed: Bool
    public var payload: [UInt8]
  }

  public let maxMessageBytes: Int
  private var header: [UInt8] = []
  private var payload: [UInt8] = []
  private var expected: Int = -1
  private var compressed = false

  public init(maxMessageBytes: Int) {
    self.maxMessageBytes = maxMessageBytes
    header.reserveCapacity(5)
  }

  /// Bytes of the incomplete message received so far, its 5-byte prefix included.
  public var bufferedBytes: Int { expected < 0 ? header.count : 5 + payload.count }

  /// Appends `bytes`, returning the messages they complete.
  public mutating func append(_ bytes: UnsafeRawBufferPointer) throws(RPCError) -> [Message] {
    var messages: [Message] = []
    var i = 0
    let n = bytes.count
    while i < n {
      if expected < 0 {
        let take = min(5 - header.count, n - i)
        header.append(contentsOf: Self.slice(bytes, i, take))
        i += take
        guard header.count == 5 else { break }
        guard header[0] <= 1 else {
          throw RPCError(.internal, "invalid gRPC message flag \(header[0])")
        }
        compressed = header[0] == 1
        let length =
          Int(header[1]) << 24 | Int(header[2]) << 16 | Int(header[3]) << 8 | Int(header[4])
        header.removeAll(keepingCapacity: true)
        guard length <= maxMessageBytes else {
          throw RPCError(
            .resourceExhausted,
            "message of \(length) bytes exceeds the limit of \(maxMessageBytes) bytes")
        }
        expected = length
        payload = []
        // A declared length is only a claim: reserve what has arrived (up to 1 MiB ahead),
        // so streams announcing large messages cannot make us allocate before they send.
        payload.reserveCapacity(min(length, max(n - i, 1 << 20)))
      }
      let take = min(expected - payload.count, n - i)
      payload.append(contentsOf: Self.slice(bytes, i, take))
      i += take
      if payload.count == expected {
        messages.append(Message(compressed: compressed, payload: payload))
        payload = []
        expected = -1
      }
    }
    return messages
  }

  /// A typed view of part of `bytes`, so appends are one memcpy rather than a byte loop.
  @inline(__always)
  private static func slice(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ count: Int)
    -> UnsafeBufferPointer<UInt8>
  {
    UnsafeBufferPointer(start: bytes.baseAddress!.assumingMemoryBound(to: UInt8.self) + start, count: count)
  }

  /// Whether the body ended cleanly, between two messages.
  public var isAtMessageBoundary: Bool { expected < 0 && header.isEmpty }
}

/// The 5-byte gRPC message prefix for an uncompressed payload of `length` bytes.
@inline(__always)
public func grpcMessagePrefix(length: Int, compressed: Bool = false) -> [UInt8] {
  [
    compressed ? 1 : 0, UInt8(truncatingIfNeeded: length >> 24),
    UInt8(truncatingIfNeeded: length >> 16), UInt8(truncatingIfNeeded: length >> 8),
    UInt8(truncatingIfNeeded: length),
  ]
}
