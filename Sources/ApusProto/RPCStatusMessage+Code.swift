extension RPCStatusMessage {
  /// A status with `code` and a message for humans, and no details.
  public init(_ code: RPCStatusCode, _ message: String) {
    self.init()
    self.code = code.rawValue
    self.message = message
  }

  /// `code` as a status code.
  public var statusCode: RPCStatusCode { RPCStatusCode(rawValue: code) }
}
