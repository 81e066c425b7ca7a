import ApusProto
import Testing

@testable import ApusServices

@Suite("ByteStream Write chunks")
struct WriteChunksTests {
  /// Where a slice's first byte lives.
  func address(_ bytes: ArraySlice<UInt8>) -> UnsafeRawPointer? {
    bytes.withUnsafeBytes { $0.baseAddress }
  }

  func message(name: String, data: [UInt8]) throws -> (bytes: [UInt8], request: WriteRequest) {
    var request = WriteRequest()
    request.resourceName = name
    request.data = data[...]
    let bytes = request.serializedBytes()
    return (bytes, try WriteRequest(serializedBytes: bytes))
  }

  @Test(
    "data that is nearly all of its message is kept in place; data beside a long name is copied out"
  )
  func keptOrCopied() throws {
    let data = [UInt8](repeating: 7, count: 64 << 10)
    let upload = try message(
      name: "uploads/u/blobs/\(String(repeating: "a", count: 64))/65536", data: data)
    // Decoding does not copy: the slice lies inside the message's bytes.
    #expect(upload.request.data.count == data.count && upload.request.data.startIndex > 0)
    let kept = WriteChunks.kept(upload.request.data, ofMessageBytes: upload.bytes.count)
    #expect(address(kept) == address(upload.request.data))

    let hostile = try message(name: String(repeating: "n", count: 1 << 20), data: [1, 2, 3])
    let copied = WriteChunks.kept(hostile.request.data, ofMessageBytes: hostile.bytes.count)
    #expect(Array(copied) == [1, 2, 3])
    #expect(copied.startIndex == 0 && address(copied) != address(hostile.request.data))
  }
}
