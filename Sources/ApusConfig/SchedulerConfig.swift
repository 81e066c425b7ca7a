/// A named scheduler: its queue, how it matches platform properties, and its limits.
public struct SchedulerConfig: Sendable, Equatable, Decodable {
  /// How a platform property of an action is matched against workers.
  public enum PropertyRule: String, Sendable, Equatable, CaseIterable {
    /// The worker must offer the same value.
    case exact
    /// Numeric: the worker's free amount must be at least the value; reserved while running.
    case minimum
    /// Passed to the worker, never restricts matching.
    case priority
    /// Dropped.
    case ignore
  }

  /// Property name → rule. Actions naming other properties are rejected.
  public var platformProperties: [String: PropertyRule]
  /// How often an action is queued again after its worker disappeared before failing.
  public var maxJobRetries: Int
  /// A worker silent this long is gone.
  public var workerTimeoutSeconds: Int
  /// How often workers are asked to send keep-alives.
  public var keepAliveSeconds: Int
  /// An action no connected worker could ever run fails after this long (while no worker is
  /// connected at all, actions wait).
  public var unsatisfiableGraceSeconds: Int
  /// Timeout for actions that set none.
  public var defaultTimeoutSeconds: Int
  /// Actions asking for more are rejected.
  public var maxTimeoutSeconds: Int
  /// Finished operations stay visible to WaitExecution and GetOperation this long.
  public var completedOperationSeconds: Int
  /// Key `max_queued_actions`: queued (not yet running) actions allowed per instance
  /// name; an Execute that would queue one more fails RESOURCE_EXHAUSTED. Merged actions
  /// and retries are not counted against it.
  public var maxQueuedActions: Int
  /// Key `worker_reconnect_grace_seconds`: a worker whose stream ended keeps its running
  /// actions this long; registering again with the same id within it keeps them (0:
  /// requeued at once).
  public var workerReconnectGraceSeconds: Int
  /// Where operations, queue and worker leases live (key `state`; default `"memory"`).
  public var state: SchedulerStateConfig = .memory

  public init(
    platformProperties: [String: PropertyRule] = Self.defaultProperties, maxJobRetries: Int = 3,
    workerTimeoutSeconds: Int = 30, keepAliveSeconds: Int = 5, unsatisfiableGraceSeconds: Int = 10,
    defaultTimeoutSeconds: Int = 900, maxTimeoutSeconds: Int = 3600,
    completedOperationSeconds: Int = 600, maxQueuedActions: Int = 200_000,
    workerReconnectGraceSeconds: Int = 10
  ) {
    self.platformProperties = platformProperties
    self.maxJobRetries = maxJobRetries
    self.workerTimeoutSeconds = workerTimeoutSeconds
    self.keepAliveSeconds = keepAliveSeconds
    self.unsatisfiableGraceSeconds = unsatisfiableGraceSeconds
    self.defaultTimeoutSeconds = defaultTimeoutSeconds
    self.maxTimeoutSeconds = maxTimeoutSeconds
    self.completedOperationSeconds = completedOperationSeconds
    self.maxQueuedActions = maxQueuedActions
    self.workerReconnectGraceSeconds = workerReconnectGraceSeconds
  }

  public static let defaultProperties: [String: PropertyRule] = [
    "OSFamily": .exact, "cpu_count": .minimum, "container-image": .priority, "block-network": .priority,
  ]

  public init(from decoder: any Decoder) throws {
    let o = try ConfigObject(
      decoder,
      allowedKeys: [
        "platform_properties", "max_job_retries", "worker_timeout_seconds", "keep_alive_seconds",
        "unsatisfiable_grace_seconds", "default_timeout_seconds", "max_timeout_seconds",
        "completed_operation_seconds", "max_queued_actions", "worker_reconnect_grace_seconds",
        "state",
      ])
    let d = SchedulerConfig()
    if let raw = try o.decode([String: String].self, "platform_properties") {
      var rules: [String: PropertyRule] = [:]
      for (name, value) in raw {
        guard let rule = PropertyRule(rawValue: value) else {
          throw ConfigError(
            path: o.path("platform_properties") + ".\(name)",
            "expected one of \(PropertyRule.allCases.map(\.rawValue).joined(separator: ", ")), got \"\(value)\"")
        }
        rules[name] = rule
      }
      platformProperties = rules
    } else {
      platformProperties = d.platformProperties
    }
    maxJobRetries = Int(try o.integer("max_job_retries", positive: false) ?? Int64(d.maxJobRetries))
    workerTimeoutSeconds = Int(try o.integer("worker_timeout_seconds") ?? Int64(d.workerTimeoutSeconds))
    keepAliveSeconds = Int(try o.integer("keep_alive_seconds") ?? Int64(d.keepAliveSeconds))
    guard keepAliveSeconds < workerTimeoutSeconds else {
      throw o.error("keep_alive_seconds", "must be less than worker_timeout_seconds (\(workerTimeoutSeconds))")
    }
    unsatisfiableGraceSeconds = Int(
      try o.integer("unsatisfiable_grace_seconds", positive: false) ?? Int64(d.unsatisfiableGraceSeconds))
    defaultTimeoutSeconds = Int(try o.integer("default_timeout_seconds") ?? Int64(d.defaultTimeoutSeconds))
    maxTimeoutSeconds = Int(try o.integer("max_timeout_seconds") ?? Int64(d.maxTimeoutSeconds))
    guard defaultTimeoutSeconds <= maxTimeoutSeconds else {
      throw o.error("default_timeout_seconds", "must not exceed max_timeout_seconds (\(maxTimeoutSeconds))")
    }
    completedOperationSeconds = Int(
      try o.integer("completed_operation_seconds") ?? Int64(d.completedOperationSeconds))
    maxQueuedActions = Int(try o.integer("max_queued_actions") ?? Int64(d.maxQueuedActions))
    workerReconnectGraceSeconds = Int(
      try o.integer("worker_reconnect_grace_seconds", positive: false) ?? Int64(d.workerReconnectGraceSeconds))
    state = try o.decode(SchedulerStateConfig.self, "state") ?? .memory
  }
}

/// A worker run by this process: it connects to a scheduler and a CAS by URL.
public struct WorkerConfig: Sendable, Equatable, Decodable {
  /// Key `scheduler`: one `grpc://host:port` (or `grpcs://`) URL of a scheduler's WorkerAPI, or
  /// a list of them. The worker registers with one at a time and moves to the next when its
  /// stream breaks; a host name with several addresses counts as one endpoint per address.
  public var schedulers: [String]
  /// The scheduler URLs, for display.
  public var scheduler: String { schedulers.joined(separator: ", ") }
  /// `grpc://host:port` (or `grpcs://`) of the CAS and action cache the actions use.
  public var cas: String
  /// For `grpcs://` URLs: trust roots, client certificate, server name (both connections). Its
  /// files are read again when they change (checked every 2 s) or on SIGHUP; new connections
  /// use them, open ones and running actions keep going.
  public var tls: ClientTLSConfig?
  /// The user (and group) actions run as when the worker runs as root (key `run_as`:
  /// `{"user": "nobody", "group": "nogroup"}`; the group defaults to the user's).
  public var runAs: RunAs?
  /// More paths hidden from actions (key `hide_paths`; needs `run_as`). The input cache and
  /// the TLS private key are always hidden when `run_as` is set; list the directories with
  /// the worker's config, tokens and keys here.
  public var hidePaths: [String]

  public struct RunAs: Sendable, Equatable {
    public var user: String
    public var group: String?
  }
  /// Fresh work directories are made under this one.
  public var workDirectory: String
  /// Local filesystem cache of input blobs; inputs are hard-linked from it.
  public var cacheDirectory: String
  public var cacheMaxBytes: Int64
  public var maxConcurrentActions: Int
  /// Properties offered to the scheduler; values may come from `${VAR}`.
  public var platform: [String: String]
  /// Properties measured at start by running a command, e.g. `{"cpu_count": ["nproc"]}`.
  public var platformCommands: [String: [String]]
  /// Prepended to every command (a sandbox wrapper, `nice`, …).
  public var entrypoint: [String]
  /// Key `token_file`: a file holding the bearer token sent to the scheduler and the CAS
  /// (`authorization: Bearer …`), read at start and again when it changes (checked every 2 s)
  /// or on SIGHUP, for new calls; nil: none sent.
  public var tokenFile: String?

  public init(
    scheduler: String, cas: String, workDirectory: String, cacheDirectory: String,
    cacheMaxBytes: Int64 = 10 << 30, maxConcurrentActions: Int = 2,
    platform: [String: String] = ["OSFamily": "linux"],
    platformCommands: [String: [String]] = ["cpu_count": ["nproc"]], entrypoint: [String] = [],
    tokenFile: String? = nil
  ) {
    self.schedulers = [scheduler]
    self.cas = cas
    self.workDirectory = workDirectory
    self.cacheDirectory = cacheDirectory
    self.cacheMaxBytes = cacheMaxBytes
    self.maxConcurrentActions = maxConcurrentActions
    self.platform = platform
    self.platformCommands = platformCommands
    self.entrypoint = entrypoint
    self.hidePaths = []
    self.tokenFile = tokenFile
  }

  public init(from decoder: any Decoder) throws {
    let o = try ConfigObject(
      decoder,
      allowedKeys: [
        "scheduler", "cas", "work_directory", "cache_directory", "cache_max_bytes",
        "max_concurrent_actions", "platform", "platform_commands", "entrypoint", "tls", "run_as", "hide_paths",
        "token_file",
      ])
    // A string, or a list of strings (each path named in errors).
    if !o.has("scheduler") { throw o.error("scheduler", "is required") }
    var urls: [(path: String, url: String)]
    if (try? o.decode([String].self, "scheduler")) != nil, let list = try o.strings("scheduler") {
      guard !list.isEmpty else { throw o.error("scheduler", "expected at least one grpc:// or grpcs:// url") }
      urls = list.enumerated().map { (o.path("scheduler") + "[\($0)]", $1) }
    } else if let one = try? o.string("scheduler") {
      urls = [(o.path("scheduler"), one)]
    } else {
      throw o.error("scheduler", "expected a grpc(s):// url or a list of them")
    }
    schedulers = urls.map(\.url)
    cas = try o.requiredString("cas")
    urls.append((o.path("cas"), cas))
    tls = try o.decode(ClientTLSConfig.self, "tls")
    var anyTLS = false
    for (path, url) in urls {
      let (valid, grpcs) = GRPCURL.check(url)
      guard valid else { throw ConfigError(path: path, "expected grpc://host:port or grpcs://host:port, got \"\(url)\"") }
      anyTLS = anyTLS || grpcs
    }
    if tls != nil && !anyTLS { throw o.error("tls", "is only used with grpcs:// urls") }
    if let raw = try o.stringMap("run_as") {
      guard let user = raw["user"], !user.isEmpty, Set(raw.keys).isSubset(of: ["user", "group"]) else {
        throw o.error("run_as", "expected {\"user\": NAME, \"group\": NAME (optional)}")
      }
      runAs = RunAs(user: user, group: raw["group"])
    }
    hidePaths = try o.strings("hide_paths") ?? []
    for (i, path) in hidePaths.enumerated() where !path.hasPrefix("/") {
      throw ConfigError(path: o.path("hide_paths") + "[\(i)]", "expected an absolute path, got \"\(path)\"")
    }
    workDirectory = try o.requiredString("work_directory")
    cacheDirectory = try o.requiredString("cache_directory")
    cacheMaxBytes = try o.integer("cache_max_bytes") ?? (10 << 30)
    maxConcurrentActions = Int(try o.integer("max_concurrent_actions") ?? 2)
    let raw = try o.stringMap("platform") ?? ["OSFamily": "linux"]
    var platform: [String: String] = [:]
    for (name, value) in raw {
      switch o.expansion.expand(value) {
      case .success(let v): platform[name] = v
      case .failure(let e): throw ConfigError(path: o.path("platform") + ".\(name)", e.message)
      }
    }
    self.platform = platform
    platformCommands = try o.stringListMap("platform_commands") ?? ["cpu_count": ["nproc"]]
    for (name, command) in platformCommands where command.isEmpty {
      throw ConfigError(path: o.path("platform_commands") + ".\(name)", "the command is empty")
    }
    entrypoint = try o.strings("entrypoint") ?? []
    tokenFile = try o.string("token_file")
  }
}

extension WorkerConfig {
  /// `~` in directories becomes `home`.
  public func expandingTilde(home: String) -> WorkerConfig {
    func expand(_ p: String) -> String {
      p == "~" ? home : p.hasPrefix("~/") ? home + p.dropFirst() : p
    }
    var copy = self
    copy.workDirectory = expand(workDirectory)
    copy.cacheDirectory = expand(cacheDirectory)
    copy.tokenFile = tokenFile.map(expand)
    return copy
  }
}
