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
  /// The prefix bytes received so far, big-endian in the low bytes: a prefix split across
  /// DATA frames needs no array of its own.
  private var header: UInt64 = 0
  private var headerCount = 0
  private var payload: [UInt8] = []
  private var expected: Int = -1
  private var compressed = false

  /// How much of a declared length is reserved before it arrives: 1 MiB of data (a common
  /// upload chunk) and room for the rest of its message, so such a message fills one
  /// allocation of its own size. A store may keep it (an upload's data is a slice of it):
  /// growing it would copy it and leave it twice its size.
  static let reserveAhead = (1 << 20) + (16 << 10)

  public init(maxMessageBytes: Int) {
    self.maxMessageBytes = maxMessageBytes
  }

  /// Bytes of the incomplete message received so far, its 5-byte prefix included.
  public var bufferedBytes: Int { expected < 0 ? headerCount : 5 + payload.count }

  /// Takes `bytes` from `offset` on, up to the end of the first message they complete, and
  /// returns that message; nil once all of `bytes` is taken without completing one. The
  /// caller loops, handling each message between calls: no array of messages per DATA frame.
  public mutating func next(
    _ bytes: UnsafeRawBufferPointer, from offset: inout Int
  ) throws(RPCError) -> Message? {
    let n = bytes.count
    while offset < n {
      if expected < 0 {
        while headerCount < 5 && offset < n {
          header = header << 8 | UInt64(bytes[offset])
          headerCount += 1
          offset += 1
        }
        guard headerCount == 5 else { return nil }
        let flag = header >> 32
        guard flag <= 1 else {
          throw RPCError(.internal, "invalid gRPC message flag \(flag)")
        }
        compressed = flag == 1
        let length = Int(header & 0xFFFF_FFFF)
        header = 0
        headerCount = 0
        guard length <= maxMessageBytes else {
          throw RPCError(
            .resourceExhausted,
            "message of \(length) bytes exceeds the limit of \(maxMessageBytes) bytes")
        }
        expected = length
        payload = []
        // A declared length is only a claim: reserve what has arrived (up to `reserveAhead`),
        // so streams announcing large messages cannot make us allocate before they send.
        payload.reserveCapacity(min(length, max(n - offset, Self.reserveAhead)))
      }
      let take = min(expected - payload.count, n - offset)
      payload.append(contentsOf: Self.slice(bytes, offset, take))
      offset += take
      if payload.count == expected {
        let message = Message(compressed: compressed, payload: payload)
        payload = []
        expected = -1
        return message
      }
    }
    return nil
  }

  /// Appends `bytes`, returning the messages they complete (for tests and the fuzz target;
  /// the connection takes them one at a time with `next`).
  public mutating func append(_ bytes: UnsafeRawBufferPointer) throws(RPCError) -> [Message] {
    var messages: [Message] = []
    var offset = 0
    while let message = try next(bytes, from: &offset) { messages.append(message) }
    return messages
  }

  /// A typed view of part of `bytes`, so appends are one memcpy rather than a byte loop.
  @inline(__always)
  private static func slice(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ count: Int)
    -> UnsafeBufferPointer<UInt8>
  {
    UnsafeBufferPointer(
      start: bytes.baseAddress!.assumingMemoryBound(to: UInt8.self) + start, count: count)
  }

  /// Whether the body ended cleanly, between two messages.
  public var isAtMessageBoundary: Bool { expected < 0 && headerCount == 0 }
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
