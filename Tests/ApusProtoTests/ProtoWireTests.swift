import Testing

@testable import ApusProto

@Suite("Protobuf wire format", .timeLimit(.minutes(3)))
struct ProtoWireTests {
  @Test("varints round-trip at every length", arguments: [
    UInt64(0), 1, 127, 128, 300, 16_383, 16_384, UInt64(UInt32.max), UInt64.max,
  ])
  func varintRoundTrip(value: UInt64) throws {
    var w = ProtoWriter()
    w.writeVarint(value)
    var r = ProtoReader(w.bytes)
    #expect(try r.readVarint() == value)
    #expect(r.isAtEnd)
  }

  @Test("known encodings")
  func knownEncodings() {
    var d = Digest()
    d.hash = "ab"
    d.sizeBytes = 3
    #expect(d.serializedBytes() == [0x0A, 0x02, 0x61, 0x62, 0x10, 0x03])
    var status = RPCStatusMessage()
    status.code = -1
    // Negative int32 is a sign-extended 10-byte varint.
    #expect(status.serializedBytes() == [0x08] + [UInt8](repeating: 0xFF, count: 9) + [0x01])
    #expect(Digest().serializedBytes() == [])
  }

  /// The header is checked against bytes worked out by hand from the wire format (tag 0x52
  /// = field 10 `data`, length-delimited; then the length as a varint), not against the
  /// codec's own encoder, which is then held to the same bytes. ProtocCrossCheckTests checks
  /// the header against protoc too.
  @Test("a ReadResponse header followed by its data is the whole message", arguments: [
    (1, [0x52, 0x01]),
    (127, [0x52, 0x7F]),
    (128, [0x52, 0x80, 0x01]),
    (16_384, [0x52, 0x80, 0x80, 0x01]),
    (262_144, [0x52, 0x80, 0x80, 0x10]),
  ] as [(Int, [UInt8])])
  func readResponseHeader(count: Int, expected: [UInt8]) {
    var response = ReadResponse()
    response.data = (0..<count).map { UInt8(truncatingIfNeeded: $0) }
    #expect(ReadResponse.encodedHeader(dataCount: count) == expected)
    let encoded = response.serializedBytes()
    #expect(Array(encoded.prefix(expected.count)) == expected)
    #expect(encoded.count == expected.count + count)
    #expect(encoded.dropFirst(expected.count).elementsEqual(response.data))
    #expect(ReadResponse.encodedHeader(dataCount: 0) == [])
    #expect(ReadResponse().serializedBytes() == [])
  }

  @Test("unknown fields of every wire type are skipped")
  func unknownFieldsSkipped() throws {
    let bytes: [UInt8] = [
      0x0A, 0x01, 0x78,  // hash = "x"
      0x18, 0x96, 0x01,  // field 3 varint
      0x21, 1, 2, 3, 4, 5, 6, 7, 8,  // field 4 fixed64
      0x2D, 1, 2, 3, 4,  // field 5 fixed32
      0x32, 0x02, 0xAA, 0xBB,  // field 6 bytes
      0x10, 0x07,  // size = 7
    ]
    let d = try Digest(serializedBytes: bytes)
    #expect(d.hash == "x")
    #expect(d.sizeBytes == 7)
  }

  @Test("malformed input throws instead of crashing", arguments: [
    [0x0A] as [UInt8],  // tag without length
    [0x0A, 0x05, 0x61],  // length past the end
    [0x10, 0x80, 0x80],  // truncated varint
    [0x10] + [UInt8](repeating: 0xFF, count: 10) + [0x01],  // varint over 10 bytes
    [0x0B],  // start-group wire type
    [0x00, 0x01],  // field number 0
    [0x0A, 0x02, 0xC3, 0x28],  // invalid UTF-8 in a string
    [0x08, 0x01],  // hash declared as string, sent as varint
  ])
  func malformedInput(bytes: [UInt8]) {
    #expect(throws: ProtoDecodingError.self) { try Digest(serializedBytes: bytes) }
  }

  @Test("a malformed nested message fails the outer decode")
  func malformedNested() {
    // Directory.directories[0] = DirectoryNode{ digest = Digest{ size_bytes as a string } }
    let digest: [UInt8] = [0x12, 0x01, 0x31]
    let node: [UInt8] = [0x12, UInt8(digest.count)] + digest
    let directory: [UInt8] = [0x12, UInt8(node.count)] + node
    #expect(throws: ProtoDecodingError.self) { try Directory(serializedBytes: directory) }
  }

  @Test("repeated enums decode packed and unpacked")
  func packedAndUnpacked() throws {
    let packed: [UInt8] = [0x0A, 0x02, 0x01, 0x09]
    let unpacked: [UInt8] = [0x08, 0x01, 0x08, 0x09]
    #expect(try CacheCapabilities(serializedBytes: packed).digestFunctions == [.sha256, .blake3])
    #expect(try CacheCapabilities(serializedBytes: unpacked).digestFunctions == [.sha256, .blake3])
  }
}
