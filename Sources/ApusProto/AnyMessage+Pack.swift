extension AnyMessage {
  static let typeURLPrefix = "type.googleapis.com/"

  /// Packs `message` under `type.googleapis.com/<fullName>`.
  public init<M: ProtoMessage>(packing message: M, fullName: String) {
    self.init()
    typeURL = Self.typeURLPrefix + fullName
    value = message.serializedBytes()
  }
}
