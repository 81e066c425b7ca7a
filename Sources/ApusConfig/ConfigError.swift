/// A configuration mistake, named by its JSON path: `stores.cas.filesystem.max_bytes:
/// expected a positive integer, got "10G"`.
public struct ConfigError: Error, Sendable, Equatable, CustomStringConvertible {
  public var path: String
  public var message: String

  public init(path: String, _ message: String) {
    self.path = path
    self.message = message
  }

  public var description: String { path.isEmpty ? message : "\(path): \(message)" }
}

/// Dotted JSON path of a coding path: `servers[0].listen`.
func jsonPath(_ codingPath: [any CodingKey]) -> String {
  var out = ""
  for key in codingPath {
    if let index = key.intValue {
      out += "[\(index)]"
    } else {
      out += out.isEmpty ? key.stringValue : ".\(key.stringValue)"
    }
  }
  return out
}
