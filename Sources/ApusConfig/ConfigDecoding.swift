import Foundation

/// Any JSON object key.
struct AnyKey: CodingKey, Hashable {
  var stringValue: String
  var intValue: Int? { nil }
  init(_ string: String) { stringValue = string }
  init?(stringValue: String) { self.stringValue = stringValue }
  init?(intValue: Int) { nil }
}

extension CodingUserInfoKey {
  static let environment = CodingUserInfoKey(rawValue: "apus.environment")!
}

/// A keyed container with the config conventions: unknown keys are errors, strings have
/// `${VAR}` expanded, numbers may be given as strings (after expansion), and every error
/// names its JSON path.
struct ConfigObject {
  let container: KeyedDecodingContainer<AnyKey>
  let expansion: EnvironmentExpansion

  init(_ decoder: any Decoder, allowedKeys: Set<String>) throws {
    container = try decoder.container(keyedBy: AnyKey.self)
    expansion =
      decoder.userInfo[.environment] as? EnvironmentExpansion
      ?? EnvironmentExpansion(variables: [:])
    for key in container.allKeys where !allowedKeys.contains(key.stringValue) {
      throw error(
        key.stringValue,
        "unknown key; expected one of: \(allowedKeys.sorted().joined(separator: ", "))")
    }
  }

  var keys: [String] { container.allKeys.map(\.stringValue) }

  func path(_ key: String) -> String { jsonPath(container.codingPath + [AnyKey(key)]) }

  func error(_ key: String, _ message: String) -> ConfigError {
    ConfigError(path: path(key), message)
  }

  func has(_ key: String) -> Bool { container.contains(AnyKey(key)) }

  func string(_ key: String) throws -> String? {
    guard has(key) else { return nil }
    guard let raw = try? container.decode(String.self, forKey: AnyKey(key)) else {
      throw error(key, "expected a string")
    }
    switch expansion.expand(raw) {
    case .success(let value): return value
    case .failure(let e): throw error(key, e.message)
    }
  }

  func requiredString(_ key: String) throws -> String {
    guard let value = try string(key) else { throw error(key, "is required") }
    return value
  }

  /// A non-negative (or positive) integer, given as a JSON number or a string of digits.
  func integer(_ key: String, positive: Bool = true) throws -> Int64? {
    guard has(key) else { return nil }
    let expected = positive ? "a positive integer" : "a non-negative integer"
    var value: Int64?
    if let n = try? container.decode(Int64.self, forKey: AnyKey(key)) {
      value = n
    } else if let s = try? string(key) {
      guard let n = Int64(s) else { throw error(key, "expected \(expected), got \"\(s)\"") }
      value = n
    } else {
      throw error(key, "expected \(expected)")
    }
    if let value, value < (positive ? 1 : 0) {
      throw error(key, "expected \(expected), got \(value)")
    }
    return value
  }

  func bool(_ key: String) throws -> Bool? {
    guard has(key) else { return nil }
    if let b = try? container.decode(Bool.self, forKey: AnyKey(key)) { return b }
    switch try string(key) {
    case "true": return true
    case "false": return false
    case let s: throw error(key, "expected true or false, got \"\(s ?? "")\"")
    }
  }

  /// A nested store tree under `key`, which must be present.
  /// One of an enum's raw values; the error lists them all.
  func choice<T: RawRepresentable & CaseIterable>(_ key: String) throws -> T? where T.RawValue == String {
    guard let raw = try string(key) else { return nil }
    guard let value = T(rawValue: raw) else {
      let names = T.allCases.map(\.rawValue).joined(separator: ", ")
      throw error(key, "expected one of \(names), got \"\(raw)\"")
    }
    return value
  }

  func requiredStore(_ key: String) throws -> StoreSpec {
    guard let spec = try decode(StoreSpec.self, key) else { throw error(key, "is required") }
    return spec
  }

  /// A list of strings, each with `${VAR}` expanded like `string(_:)`.
  func strings(_ key: String) throws -> [String]? {
    try decode([String].self, key)?.enumerated().map { i, raw in try expand(raw, at: "\(path(key))[\(i)]") }
  }

  /// An object of strings; values expanded, keys as written.
  func stringMap(_ key: String) throws -> [String: String]? {
    guard let raw = try decode([String: String].self, key) else { return nil }
    return try raw.reduce(into: [:]) { out, entry in out[entry.key] = try expand(entry.value, at: "\(path(key)).\(entry.key)") }
  }

  /// An object of string lists; values expanded, keys as written.
  func stringListMap(_ key: String) throws -> [String: [String]]? {
    guard let raw = try decode([String: [String]].self, key) else { return nil }
    return try raw.reduce(into: [:]) { out, entry in
      out[entry.key] = try entry.value.enumerated().map { i, v in try expand(v, at: "\(path(key)).\(entry.key)[\(i)]") }
    }
  }

  private func expand(_ raw: String, at path: String) throws -> String {
    switch expansion.expand(raw) {
    case .success(let value): return value
    case .failure(let e): throw ConfigError(path: path, e.message)
    }
  }

  func decode<T: Decodable>(_ type: T.Type, _ key: String) throws -> T? {
    guard has(key) else { return nil }
    return try container.decode(T.self, forKey: AnyKey(key))
  }
}
