/// Expands `${NAME}` and `${NAME:-default}` in config strings, so one file serves
/// docker-compose, systemd and Terraform templates. `$$` is a literal `$`.
public struct EnvironmentExpansion: Sendable {
  public var variables: [String: String]

  public init(variables: [String: String]) {
    self.variables = variables
  }

  /// Returns the expanded string, or a message naming what could not be expanded.
  public func expand(_ text: String) -> Result<String, ConfigError> {
    guard text.contains("$") else { return .success(text) }
    var out = ""
    var rest = Substring(text)
    while let dollar = rest.firstIndex(of: "$") {
      out += rest[..<dollar]
      let after = rest.index(after: dollar)
      if after < rest.endIndex, rest[after] == "$" {
        out += "$"
        rest = rest[rest.index(after: after)...]
        continue
      }
      guard after < rest.endIndex, rest[after] == "{" else {
        out += "$"
        rest = rest[after...]
        continue
      }
      guard let close = rest[after...].firstIndex(of: "}") else {
        return .failure(ConfigError(path: "", "unterminated ${ in \"\(text)\""))
      }
      let body = rest[rest.index(after: after)..<close]
      let name: Substring
      let fallback: Substring?
      if let sep = body.range(of: ":-") {
        name = body[..<sep.lowerBound]
        fallback = body[sep.upperBound...]
      } else {
        name = body
        fallback = nil
      }
      guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else {
        return .failure(ConfigError(path: "", "invalid variable name \"\(name)\" in \"\(text)\""))
      }
      if let value = variables[String(name)], !(value.isEmpty && fallback != nil) {
        out += value
      } else if let fallback {
        out += fallback
      } else {
        return .failure(
          ConfigError(path: "", "environment variable \(name) is not set and has no default"))
      }
      rest = rest[rest.index(after: close)...]
    }
    out += rest
    return .success(out)
  }
}
