import Foundation
import Testing

@testable import ApusConfig

@Suite("Store kinds", .timeLimit(.minutes(3)))
struct StoreSpecTests {
  func store(_ json: String) throws -> StoreSpec {
    let text = #"{ stores: { s: "# + json + #" }, servers: [ { listen: "a:1", instances: { "": {} } } ] }"#
    let c = try ApusConfiguration.parse(Data(text.utf8), environment: [:])
    return try #require(c.stores["s"])
  }

  func error(_ json: String) -> String {
    do {
      _ = try store(json)
      return "no error"
    } catch {
      return "\(error)"
    }
  }

  static let memory = StoreSpec.memory(MemoryStoreSpec())

  @Test("each kind decodes to its own type, with that type's defaults", arguments: [
    (#"{ verify: { backend: { memory: {} } } }"#,
     StoreSpec.verify(VerifyStoreSpec(backend: memory, verifyHash: true))),
    (#"{ fast_slow: { fast: { memory: {} }, slow: { memory: {} }, write_fast: false } }"#,
     .fastSlow(FastSlowStoreSpec(fast: memory, slow: memory, fillFastOnRead: true, writeFast: false))),
    (#"{ size_partitioning: { threshold_bytes: 100, lower: { memory: {} }, upper: { memory: {} } } }"#,
     .sizePartitioning(SizePartitioningStoreSpec(thresholdBytes: 100, lower: memory, upper: memory))),
    (#"{ existence_cache: { backend: { memory: {} } } }"#,
     .existenceCache(ExistenceCacheStoreSpec(backend: memory, maxSeconds: 600, maxCount: 1_000_000))),
    (#"{ completeness_checking: { backend: { memory: {} }, cas: { memory: { max_bytes: 5 } } } }"#,
     .completenessChecking(CompletenessCheckingStoreSpec(backend: memory, cas: .memory(MemoryStoreSpec(maxBytes: 5))))),
    (#"{ grpc: { url: "grpc://h:1", role: "action_cache" } }"#,
     .grpc(GRPCStoreSpec(url: "grpc://h:1", instanceName: "", actionCache: true))),
    (#"{ shard: { stores: [ { store: { memory: {} } }, { store: { memory: {} }, weight: 3 } ] } }"#,
     .shard(ShardStoreSpec(stores: [ShardSpec(store: memory, weight: 1), ShardSpec(store: memory, weight: 3)]))),
  ])
  func decodes(json: String, expected: StoreSpec) throws {
    #expect(try store(json) == expected)
  }

  @Test("an unknown kind is an error naming every known kind")
  func unknownKind() {
    let message = error(#"{ tape: {} }"#)
    #expect(message.hasPrefix("stores.s.tape: unknown key"), "got: \(message)")
    for kind in StoreSpec.kinds {
      #expect(message.contains(kind), "\(kind) missing from: \(message)")
    }
  }

  @Test("a kind's own keys are checked, and errors keep the JSON path", arguments: [
    (#"{ verify: { backend: { memory: {} }, hash: true } }"#, "stores.s.verify.hash: unknown key"),
    (#"{ shard: { stores: [] } }"#, "stores.s.shard.stores: at least one shard is required"),
    (#"{ shard: { stores: [ { store: { memory: { max_bytes: 0 } } } ] } }"#,
     "stores.s.shard.stores[0].store.memory.max_bytes: expected a positive integer, got 0"),
    (#"{ size_partitioning: { lower: { memory: {} }, upper: { memory: {} } } }"#,
     "stores.s.size_partitioning.threshold_bytes: is required"),
    (#"{ grpc: { url: "http://h:1" } }"#,
     #"stores.s.grpc.url: expected grpc://host:port or grpcs://host:port, got "http://h:1""#),
    (#"{ grpc: { url: "grpc://h:1", tls: { ca: "/ca.pem" } } }"#, "stores.s.grpc.tls: is only used with a grpcs:// url"),
    (#"{ grpc: { url: "grpcs://h:1", tls: { certificate: "/c.pem" } } }"#,
     "stores.s.grpc.tls.private_key: certificate and private_key go together"),
    (#"{ fast_slow: { fast: { memory: {} } } }"#, "stores.s.fast_slow.slow: is required"),
    (#"{ fast_slow: { fast: { memory: {} }, slow: { memory: {} }, slow_write: "later" } }"#,
     #"stores.s.fast_slow.slow_write: expected one of sync, async, got "later""#),
    (#"{ fast_slow: { fast: { filesystem: { path: "/x" } }, slow: { memory: {} }, slow_write: "async" } }"#,
     "stores.s.fast_slow.write_behind: is required with slow_write async"),
    (#"{ fast_slow: { fast: { memory: {} }, slow: { memory: {} }, write_behind: { path: "/q" } } }"#,
     "stores.s.fast_slow.write_behind: is only used with slow_write async"),
    (#"{ fast_slow: { fast: { memory: {} }, slow: { memory: {} }, slow_write: "async", write_behind: { path: "/q" } } }"#,
     "stores.s.fast_slow.slow_write: async needs a fast tier that keeps blobs on disk"),
    (#"{ verify: { backend: { fast_slow: { fast: { size_partitioning: { threshold_bytes: 9, lower: { memory: {} }, upper: { filesystem: { path: "/x" } } } }, slow: { memory: {} }, slow_write: "async", write_behind: { path: "/q" } } } } }"#,
     "stores.s.verify.backend.fast_slow.slow_write: async needs a fast tier that keeps blobs on disk"),
    (#"{ fast_slow: { fast: { filesystem: { path: "/x", sync: "none" } }, slow: { memory: {} }, slow_write: "async", write_behind: { path: "/q" } } }"#,
     "stores.s.fast_slow.slow_write: async needs a fast tier"),
    (#"{ s3: { endpoint: "http://h", bucket: "b", circuit_breaker: { failure_threshold: 0 } } }"#,
     "stores.s.s3.circuit_breaker.failure_threshold: expected a positive integer, got 0"),
    (#"{ s3: { endpoint: "http://h", bucket: "b", credentials: "imds" } }"#,
     #"stores.s.s3.credentials: expected one of auto, static, environment, container, instance, got "imds""#),
    (#"{ s3: { endpoint: "http://h", bucket: "b", credentials: "static" } }"#,
     "stores.s.s3.credentials: static needs access_key_id and secret_access_key"),
    (#"{ s3: { endpoint: "http://h", bucket: "b", credentials: "instance", access_key_id: "k", secret_access_key: "s" } }"#,
     "stores.s.s3.credentials: instance reads keys from elsewhere: drop access_key_id and secret_access_key, or use static"),
    (#"{ s3: { endpoint: "http://h", bucket: "b", access_key_id: "k" } }"#,
     "stores.s.s3.secret_access_key: is required with access_key_id"),
    (#"{ s3: { endpoint: "http://h", bucket: "b", secret_access_key: "s" } }"#,
     "stores.s.s3.access_key_id: is required with secret_access_key"),
    (#"{ s3: { endpoint: "http://h", bucket: "b", session_token: "t" } }"#,
     "stores.s.s3.session_token: is only used with access_key_id and secret_access_key"),
    (#"{ grpc: { url: "grpc://h:1", timeout_seconds: -1 } }"#,
     "stores.s.grpc.timeout_seconds: expected a positive integer, got -1"),
  ])
  func keyErrors(json: String, expected: String) {
    let message = error(json)
    #expect(message.hasPrefix(expected), "got: \(message)")
  }

  @Test("s3 credentials: static with keys, auto without, or as set", arguments: [
    (#"access_key_id: "k", secret_access_key: "s""#, S3CredentialsMode.static),
    (#"access_key_id: "k", secret_access_key: "s", credentials: "static""#, .static),
    ("", .auto),
    (#"credentials: "environment""#, .environment),
    (#"credentials: "container""#, .container),
    (#"credentials: "instance""#, .instance),
  ])
  func s3Credentials(keys: String, mode: S3CredentialsMode) throws {
    let spec = try store(#"{ s3: { endpoint: "http://h", bucket: "b", "# + keys + " } }")
    guard case .s3(let s3) = spec else {
      Issue.record("decoded as \(spec)")
      return
    }
    #expect(s3.credentials == mode)
  }

  @Test("async fast_slow over a durable tier, the outage keys of s3 and grpc, with their defaults")
  func outageKeys() throws {
    let spec = try store(
      #"{ fast_slow: { fast: { ref: "disk" }, slow: { s3: { endpoint: "http://h", bucket: "b", first_byte_timeout_seconds: 3 } }, "#
        + #"slow_write: "async", write_behind: { path: "/q", max_entries: 5 } } }, disk: { filesystem: { path: "/d" } } "#)
    guard case .fastSlow(let f) = spec, case .s3(let s3) = f.slow else {
      Issue.record("decoded as \(spec)")
      return
    }
    #expect(f.slowWrite == .async)
    #expect(f.writeBehind?.maxEntries == 5)
    #expect(f.writeBehind?.maxBytes == 10 << 30)
    #expect(f.writeBehind?.concurrency == 8)
    #expect(s3.firstByteTimeoutSeconds == 3)
    #expect(s3.connectTimeoutSeconds == 2)
    #expect(s3.idleTimeoutSeconds == 10)
    #expect(s3.requestTimeoutSeconds == 300)
    #expect(s3.circuitBreaker == CircuitBreakerConfig())
    let grpc = try store(#"{ grpc: { url: "grpc://h:1", timeout_seconds: 7, circuit_breaker: { open_seconds: 3 } } }"#)
    guard case .grpc(let g) = grpc else { return }
    #expect(g.timeoutSeconds == 7)
    #expect(g.circuitBreaker.openSeconds == 3)
    #expect(g.circuitBreaker.failureThreshold == 5)
  }
}
