/// gRPC metadata: lower-case header names with string values, in arrival order.
/// Binary (`-bin`) values are stored base64-encoded, as on the wire.
public struct Metadata: Sendable, Equatable {
  public var entries: [(name: String, value: String)]

  public init(_ entries: [(name: String, value: String)] = []) {
    self.entries = entries
  }

  public subscript(name: String) -> String? {
    entries.first { $0.name == name }?.value
  }

  /// The decoded value of a binary header such as `…-bin`; `nil` when absent or not base64.
  public func binary(_ name: String) -> [UInt8]? {
    self[name].flatMap(Base64.decode)
  }

  public static func == (a: Metadata, b: Metadata) -> Bool {
    a.entries.elementsEqual(b.entries) { $0.name == $1.name && $0.value == $1.value }
  }
}
