/// How a `filesystem` or `s3` store keeps blobs: the keys `compression` and
/// `compression_level`, shared by both stores' blocks.
///
/// - `compression` (`none`): `zstd` keeps every blob written from then on as one zstd frame
///   (files and objects shrink by the content's ratio; `max_bytes` counts what is on disk).
///   Blobs stored before either way stay readable, so the key can change on a live store.
/// - `compression_level` (3): zstd's level, 1 (fastest) to 19 (smallest); only with `zstd`.
public struct StoreCompression: Sendable, Equatable {
  public enum Algorithm: String, Sendable, Equatable, CaseIterable {
    case none, zstd
  }

  public var algorithm: Algorithm
  public var level: Int

  public static let defaultLevel = 3
  public static let none = StoreCompression(algorithm: .none)
  static let keys: Set<String> = ["compression", "compression_level"]

  public init(algorithm: Algorithm, level: Int = Self.defaultLevel) {
    self.algorithm = algorithm
    self.level = level
  }

  init(_ o: ConfigObject) throws {
    algorithm = try o.choice("compression") ?? .none
    let level = try o.integer("compression_level")
    if let level {
      guard algorithm == .zstd else {
        throw o.error("compression_level", "applies only with \"compression\": \"zstd\"")
      }
      guard level <= 19 else { throw o.error("compression_level", "expected 1 to 19, got \(level)") }
    }
    self.level = Int(level ?? Int64(Self.defaultLevel))
  }
}
