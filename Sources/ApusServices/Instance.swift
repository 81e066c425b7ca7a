import ApusProto
import ApusRPC
import ApusScheduler
import ApusStore

/// The stores behind one REAPI instance name.
public struct Instance: Sendable {
  public var cas: (any BlobStore)?
  public var actionCache: (any BlobStore)?
  public var actionCacheUpdates: Bool
  /// The scheduler behind Execution, if this instance executes actions.
  public var scheduler: (any ExecutionScheduler)?

  public init(
    cas: (any BlobStore)?, actionCache: (any BlobStore)?, actionCacheUpdates: Bool,
    scheduler: (any ExecutionScheduler)? = nil
  ) {
    self.cas = cas
    self.actionCache = actionCache
    self.actionCacheUpdates = actionCacheUpdates
    self.scheduler = scheduler
  }
}

/// Instance lookup and the request checks every service shares.
public struct InstanceTable: Sendable {
  public var instances: [String: Instance] {
    didSet { (entries, positions) = Self.index(instances) }
  }
  /// Largest message the server accepts; batch limits derive from it.
  public var maxMessageBytes: Int
  /// Checks every call against `auth`; nil: every call is allowed.
  public var authorizer: Authorizer?

  /// One instance as a call finds it: its stores and its action-cache lookup counts.
  struct Entry: Sendable {
    let name: String
    let instance: Instance
    let lookups: ActionCacheLookups.Slot
  }

  /// `instances` as a list, searched by comparing names when it is short: every call looks
  /// its instance up, and a server has a few, so a compare or two beats hashing the name.
  private var entries: [Entry]
  /// Positions in `entries` by name, for tables past `linearSearchLimit`.
  private var positions: [String: Int]
  static let linearSearchLimit = 8

  public init(instances: [String: Instance], maxMessageBytes: Int, authorizer: Authorizer? = nil) {
    self.instances = instances
    self.maxMessageBytes = maxMessageBytes
    self.authorizer = authorizer
    (entries, positions) = Self.index(instances)
  }

  private static func index(_ instances: [String: Instance]) -> ([Entry], [String: Int]) {
    let entries = instances.sorted { $0.key < $1.key }.map {
      Entry(name: $0.key, instance: $0.value, lookups: ActionCacheLookups.Slot(instance: $0.key))
    }
    let positions = Dictionary(uniqueKeysWithValues: entries.enumerated().map { ($1.name, $0) })
    return (entries, positions)
  }

  /// Every scheduler an instance here uses, for operation look-ups by name.
  var schedulers: [any ExecutionScheduler] {
    var seen: Set<ObjectIdentifier> = []
    return instances.values.compactMap(\.scheduler).filter { seen.insert(ObjectIdentifier($0)).inserted }
  }

  /// What a batch may carry in blob bytes, leaving room for the message framing around them.
  var maxBatchTotalBytes: Int64 { Int64(maxMessageBytes) - 64 * 1024 }

  func entry(_ name: String) throws -> Entry {
    if entries.count <= Self.linearSearchLimit {
      for entry in entries where entry.name == name { return entry }
    } else if let position = positions[name] {
      return entries[position]
    }
    throw RPCError.invalidArgument("unknown instance name \"\(name)\"")
  }

  func instance(_ name: String) throws -> Instance { try entry(name).instance }

  func cas(_ name: String) throws -> any BlobStore {
    guard let cas = try instance(name).cas else {
      throw RPCError(.unimplemented, "instance \"\(name)\" has no content-addressable storage")
    }
    return cas
  }

  func actionCache(_ name: String) throws -> any BlobStore {
    try actionCache(of: entry(name))
  }

  func actionCache(of entry: Entry) throws -> any BlobStore {
    guard let ac = entry.instance.actionCache else {
      throw RPCError(.unimplemented, "instance \"\(entry.name)\" has no action cache")
    }
    return ac
  }
}

/// Digest checks shared by every service.
enum DigestCheck {
  /// `field` names the digest in the error; it is only built when the digest is bad.
  static func validate(_ digest: Digest?, _ field: @autoclosure () -> String) throws -> BlobDigest {
    guard let digest else { throw RPCError.invalidArgument("\(field()) is missing") }
    guard let valid = digest.validated else {
      if digest.sizeBytes < 0 {
        throw RPCError.invalidArgument("\(field()) has negative size \(digest.sizeBytes)")
      }
      throw RPCError.invalidArgument(
        "\(field()) hash \"\(digest.hash)\" is not 64 lowercase hex digits (SHA-256)")
    }
    return valid
  }

  /// A digest decoded straight from a request: the errors of `validate(_: Digest?, _:)`.
  static func validate(_ digest: DecodedDigest?, _ field: @autoclosure () -> String) throws -> BlobDigest {
    if case .valid(let valid) = digest { return valid }
    return try validate(digest?.proto, field())
  }

  /// `digest_function` of a request: unset or SHA256, else INVALID_ARGUMENT naming it.
  static func checkFunction(_ function: DigestFunction) throws {
    guard function == .unknown || function == .sha256 else {
      let names = [
        2: "SHA1", 3: "MD5", 4: "VSO", 5: "SHA384", 6: "SHA512", 7: "MURMUR3", 8: "SHA256TREE",
        9: "BLAKE3",
      ]
      let name = names[Int(function.rawValue)].map { "\($0) (\(function.rawValue))" } ?? "\(function.rawValue)"
      throw RPCError.invalidArgument(
        "digest_function \(name) is not supported; only SHA256 is")
    }
  }
}
