/// Reads protobuf wire-format fields from a byte array without copying nested messages.
///
/// Every read is bounds-checked and throws ``ProtoDecodingError`` on malformed input.
public struct ProtoReader: Sendable {
  let storage: [UInt8]
  var index: Int
  /// Where this (possibly nested) message ends; `digest` narrows it while reading one.
  var end: Int
  /// Nesting depth, bounded so hostile input cannot exhaust the stack.
  let depth: Int

  static let maxDepth = 100

  public init(_ bytes: [UInt8]) {
    storage = bytes
    index = 0
    end = bytes.count
    depth = 0
  }

  init(storage: [UInt8], range: Range<Int>, depth: Int) {
    self.storage = storage
    self.index = range.lowerBound
    self.end = range.upperBound
    self.depth = depth
  }

  public var isAtEnd: Bool { index >= end }

  public mutating func readVarint() throws -> UInt64 {
    var result: UInt64 = 0
    var shift: UInt64 = 0
    while true {
      guard index < end else { throw ProtoDecodingError("truncated varint") }
      let byte = storage[index]
      index += 1
      if shift == 63 && byte > 1 { throw ProtoDecodingError("varint overflows 64 bits") }
      result |= UInt64(byte & 0x7F) << shift
      if byte & 0x80 == 0 { return result }
      shift += 7
      if shift > 63 { throw ProtoDecodingError("varint longer than 10 bytes") }
    }
  }

  /// The next field's tag, or `nil` at the end of the message.
  public mutating func nextTag() throws -> FieldTag? {
    guard index < end else { return nil }
    let key = try readVarint()
    let number = key >> 3
    guard number > 0, number <= 0x1FFF_FFFF else {
      throw ProtoDecodingError("invalid field number \(number)")
    }
    guard let wireType = WireType(rawValue: UInt8(key & 7)) else {
      throw ProtoDecodingError("unsupported wire type \(key & 7) for field \(number)")
    }
    return FieldTag(number: Int(number), wireType: wireType)
  }

  /// Skips an unknown field.
  public mutating func skip(_ tag: FieldTag) throws {
    switch tag.wireType {
    case .varint: _ = try readVarint()
    case .fixed64: try advance(8)
    case .fixed32: try advance(4)
    case .lengthDelimited: _ = try lengthDelimitedRange(tag)
    }
  }

  private mutating func advance(_ count: Int) throws {
    guard end - index >= count else { throw ProtoDecodingError("truncated fixed-width field") }
    index += count
  }

  private func expect(_ tag: FieldTag, _ wireType: WireType) throws {
    guard tag.wireType == wireType else {
      throw ProtoDecodingError(
        "field \(tag.number) has wire type \(tag.wireType.rawValue), expected \(wireType.rawValue)")
    }
  }

  mutating func lengthDelimitedRange(_ tag: FieldTag) throws -> Range<Int> {
    try expect(tag, .lengthDelimited)
    let length = try readVarint()
    guard length <= UInt64(end - index) else {
      throw ProtoDecodingError("field \(tag.number) length \(length) exceeds the message")
    }
    let start = index
    index += Int(length)
    return start..<index
  }

  public mutating func uint64(_ tag: FieldTag) throws -> UInt64 {
    try expect(tag, .varint)
    return try readVarint()
  }

  public mutating func int64(_ tag: FieldTag) throws -> Int64 {
    Int64(bitPattern: try uint64(tag))
  }

  /// int32 is encoded as a sign-extended varint; out-of-range values are truncated as
  /// protobuf's reference implementations do.
  public mutating func int32(_ tag: FieldTag) throws -> Int32 {
    Int32(truncatingIfNeeded: try uint64(tag))
  }

  public mutating func bool(_ tag: FieldTag) throws -> Bool {
    try uint64(tag) != 0
  }

  public mutating func bytes(_ tag: FieldTag) throws -> [UInt8] {
    Array(storage[try lengthDelimitedRange(tag)])
  }

  /// The field's bytes in place: no copy, and the slice keeps the whole message alive.
  public mutating func bytesSlice(_ tag: FieldTag) throws -> ArraySlice<UInt8> {
    storage[try lengthDelimitedRange(tag)]
  }

  public mutating func string(_ tag: FieldTag) throws -> String {
    let range = try lengthDelimitedRange(tag)
    guard let value = String(validating: storage[range], as: UTF8.self) else {
      throw ProtoDecodingError("field \(tag.number) is not valid UTF-8")
    }
    return value
  }

  public mutating func message<M: ProtoMessage>(_ tag: FieldTag, as: M.Type = M.self) throws -> M {
    let range = try lengthDelimitedRange(tag)
    guard depth < Self.maxDepth else { throw ProtoDecodingError("messages nested too deeply") }
    var inner = ProtoReader(storage: storage, range: range, depth: depth + 1)
    return try M(reading: &inner)
  }

  /// A `Digest` sub-message, its hash parsed from the received bytes in place.
  ///
  /// Accepts and rejects exactly what `message(tag, as: Digest.self)` does, with the same
  /// errors: the last occurrence of a field wins, unknown fields are skipped, a hash that
  /// is not UTF-8 throws; only a well-formed digest skips the `String`.
  public mutating func digest(_ tag: FieldTag) throws -> DecodedDigest {
    let range = try lengthDelimitedRange(tag)
    guard depth < Self.maxDepth else { throw ProtoDecodingError("messages nested too deeply") }
    // The Digest's fields are read by this reader narrowed to them, not by a nested
    // reader: one per digest retained and released the storage (1,000 per large request).
    let (outerEnd, resume) = (end, index)
    (index, end) = (range.lowerBound, range.upperBound)
    defer { (index, end) = (resume, outerEnd) }
    var hash = range.lowerBound..<range.lowerBound
    var words: BlobDigest.Words?
    var sizeBytes: Int64 = 0
    while let field = try nextTag() {
      switch field.number {
      case 1:
        hash = try lengthDelimitedRange(field)
        // In place: `hash` is within the storage (checked by lengthDelimitedRange).
        words = storage.withUnsafeBufferPointer {
          BlobDigest.parseHex(UnsafeBufferPointer(rebasing: $0[hash]))
        }
        if words == nil, String(validating: storage[hash], as: UTF8.self) == nil {
          throw ProtoDecodingError("field \(field.number) is not valid UTF-8")
        }
      case 2: sizeBytes = try int64(field)
      default: try skip(field)
      }
    }
    if let words, sizeBytes >= 0 { return .valid(BlobDigest(words: words, sizeBytes: sizeBytes)) }
    var digest = Digest()
    // Checked as UTF-8 above, when it was read.
    digest.hash = String(decoding: storage[hash], as: UTF8.self)
    digest.sizeBytes = sizeBytes
    return .invalid(digest)
  }

  /// Repeated varint field in either packed or unpacked encoding.
  public mutating func appendVarints(_ tag: FieldTag, to values: inout [UInt64]) throws {
    if tag.wireType == .lengthDelimited {
      let range = try lengthDelimitedRange(tag)
      var inner = ProtoReader(storage: storage, range: range, depth: depth + 1)
      while !inner.isAtEnd { values.append(try inner.readVarint()) }
    } else {
      values.append(try uint64(tag))
    }
  }
}
