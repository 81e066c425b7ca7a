/// A gRPC status code: the one status vocabulary of every layer. Open set, as in the gRPC
/// spec: unknown numbers survive decoding.
///
/// It lives here, in the lowest layer, because `google.rpc.Status.code` is part of the wire
/// messages and the scheduler and worker (which do not import the gRPC layer) report it in
/// ExecuteResponse; ApusRPC re-exports just this type.
public struct RPCStatusCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
  public var rawValue: Int32
  public init(rawValue: Int32) { self.rawValue = rawValue }

  public static let ok = Self(rawValue: 0)
  public static let cancelled = Self(rawValue: 1)
  public static let unknown = Self(rawValue: 2)
  public static let invalidArgument = Self(rawValue: 3)
  public static let deadlineExceeded = Self(rawValue: 4)
  public static let notFound = Self(rawValue: 5)
  public static let alreadyExists = Self(rawValue: 6)
  public static let permissionDenied = Self(rawValue: 7)
  public static let resourceExhausted = Self(rawValue: 8)
  public static let failedPrecondition = Self(rawValue: 9)
  public static let aborted = Self(rawValue: 10)
  public static let outOfRange = Self(rawValue: 11)
  public static let unimplemented = Self(rawValue: 12)
  public static let `internal` = Self(rawValue: 13)
  public static let unavailable = Self(rawValue: 14)
  public static let dataLoss = Self(rawValue: 15)
  public static let unauthenticated = Self(rawValue: 16)

  static let names = [
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
    "UNAUTHENTICATED",
  ]

  public var description: String {
    rawValue >= 0 && Int(rawValue) < Self.names.count ? Self.names[Int(rawValue)] : "CODE_\(rawValue)"
  }
}
