import ApusConfig
import ApusRPC
import Logging
import Synchronization

/// The token file of `auth.tokens`, read again when its modification time or size changed,
/// checked at most once a second by the call that looks a token up (no background task).
/// A file that cannot be read or parsed later keeps the last good entries, with an error
/// logged.
public final class TokenStore: Sendable {
  public let path: String
  private let logger: Logger
  private let state: Mutex<State>

  private struct State {
    var file: TokenFile
    var version: SmallFile.Version
    var checked: ContinuousClock.Instant
  }

  /// Reads the file; unreadable or malformed is a config error at `auth.tokens`.
  public init(path: String, logger: Logger) throws(ConfigError) {
    self.path = path
    self.logger = logger
    let (file, version) = try Self.load(path)
    state = Mutex(State(file: file, version: version, checked: .now))
  }

  private static func load(_ path: String) throws(ConfigError) -> (TokenFile, SmallFile.Version) {
    guard let raw = SmallFile.read(path) else {
      throw ConfigError(path: "auth.tokens", "cannot read the token file \(path)")
    }
    do {
      return (try TokenFile(parsing: String(decoding: raw.bytes, as: UTF8.self)), raw.version)
    } catch {
      throw ConfigError(path: "auth.tokens", "\(path) \(error)")
    }
  }

  /// The principal of `token`, nil if no line holds its hash.
  public func principal(for token: String) -> String? {
    let file = state.withLock { state -> TokenFile in
      let now = ContinuousClock.now
      guard now - state.checked >= .seconds(1) else { return state.file }
      state.checked = now
      guard let version = SmallFile.version(of: path), version != state.version else { return state.file }
      do {
        let (file, version) = try Self.load(path)
        state.file = file
        state.version = version
        logger.info("token file reloaded", metadata: ["path": "\(path)", "entries": "\(file.entries.count)"])
      } catch {
        state.version = version
        logger.error("token file not reloaded; keeping the previous tokens", metadata: ["error": "\(error)"])
      }
      return state.file
    }
    return file.principal(for: token)
  }
}
