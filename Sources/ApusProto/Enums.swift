/// `build.bazel.remote.execution.v2.DigestFunction.Value`. An open enum: unknown values
/// decode and re-encode unchanged.
public struct DigestFunction: RawRepresentable, Hashable, Sendable {
  public var rawValue: Int32
  public init(rawValue: Int32) { self.rawValue = rawValue }

  public static let unknown = DigestFunction(rawValue: 0)
  public static let sha256 = DigestFunction(rawValue: 1)
  public static let blake3 = DigestFunction(rawValue: 9)
}

/// `build.bazel.remote.execution.v2.Compressor.Value`.
public struct Compressor: RawRepresentable, Hashable, Sendable {
  public var rawValue: Int32
  public init(rawValue: Int32) { self.rawValue = rawValue }

  public static let identity = Compressor(rawValue: 0)
  public static let zstd = Compressor(rawValue: 1)
  public static let deflate = Compressor(rawValue: 2)
}

/// `build.bazel.remote.execution.v2.SymlinkAbsolutePathStrategy.Value`.
public struct SymlinkAbsolutePathStrategy: RawRepresentable, Hashable, Sendable {
  public var rawValue: Int32
  public init(rawValue: Int32) { self.rawValue = rawValue }

  public static let disallowed = SymlinkAbsolutePathStrategy(rawValue: 1)
  public static let allowed = SymlinkAbsolutePathStrategy(rawValue: 2)
}

/// `build.bazel.remote.execution.v2.ExecutionStage.Value`.
public struct ExecutionStage: RawRepresentable, Hashable, Sendable {
  public var rawValue: Int32
  public init(rawValue: Int32) { self.rawValue = rawValue }

  public static let unknown = ExecutionStage(rawValue: 0)
  public static let cacheCheck = ExecutionStage(rawValue: 1)
  public static let queued = ExecutionStage(rawValue: 2)
  public static let executing = ExecutionStage(rawValue: 3)
  public static let completed = ExecutionStage(rawValue: 4)
}
