import Logging
import NIOSSL

/// Tunables of gRPC connections, server or client: message and flow-control sizes, the
/// memory bounds on what peers may make us buffer, and the timeouts that close what is dead.
public struct GRPCServerOptions: Sendable {
  /// Largest message accepted from the peer (after decompression); larger → RESOURCE_EXHAUSTED.
  public var maxReceiveMessageBytes: Int = 4 * 1024 * 1024
  /// HTTP/2 flow-control window per stream, and the inbound/outbound buffering bound.
  public var streamWindowBytes: Int = 1024 * 1024
  /// Connection-level receive window.
  public var connectionWindowBytes: Int = 64 * 1024 * 1024
  /// SETTINGS_MAX_CONCURRENT_STREAMS: calls one connection may have open. Bazel keeps an
  /// Execute or WaitExecution stream open per remote action in flight.
  public var maxConcurrentStreams: Int = 1000
  /// Request bytes one connection may hold before its socket is no longer read.
  public var maxConnectionBufferedBytes: Int = 32 * 1024 * 1024
  /// The process-wide bound shared with other connections and listeners; nil: none.
  public var budget: BufferBudget?
  /// A connection that has not sent the HTTP/2 preface and SETTINGS by then is closed.
  public var handshakeTimeout: Duration? = .seconds(10)
  /// A server connection with no open call for this long gets GOAWAY and is closed.
  public var idleTimeout: Duration?
  /// With calls open and nothing received for this long, a PING checks the peer is alive…
  public var keepaliveInterval: Duration? = .seconds(60)
  /// …and the connection is closed if nothing arrives within this time after it.
  public var keepaliveTimeout: Duration = .seconds(20)
  /// Server: a call whose request is still open and that received no bytes for this long
  /// is cancelled (a stalled upload), so its buffers and temp files are released.
  public var uploadIdleTimeout: Duration?
  /// Server: connections one listener keeps open; at the cap, one that has not sent its
  /// preface is dropped for a new one, else the new one is refused.
  public var maxConnections: Int = 10_000
  /// Client: metadata sent on every call before the call's own (credentials).
  public var callMetadata: [(String, String)] = []
  /// Server: the deadline of a call whose client sends no `grpc-timeout` (long-lived
  /// methods excepted, see `RPCRouter.Route`); nil: none.
  public var defaultDeadline: Duration?
  /// Client: how long establishing the TCP connection may take.
  public var connectTimeout: Duration = .seconds(10)
  /// Server: TLS for every connection of the listener; nil: h2c.
  public var tls: ServerTLS?
  /// Client: TLS for the connection (a `grpcs://` URL); nil: h2c.
  public var clientTLS: ClientTLS?

  /// Server: calls that take longer are logged as warnings (long-lived routes excepted);
  /// nil: never.
  public var slowCallThreshold: Duration?
  /// Server: log fields drawn from a call's metadata (Bazel's RequestMetadata: tool
  /// invocation, mnemonic, target), for the per-call debug line and slow-call warnings.
  /// The gRPC layer knows no protobuf, so the services layer supplies it.
  public var callLogFields: (@Sendable (Metadata) -> Logger.Metadata)?

  /// Server: compression of response messages the client accepts; nil: none.
  public var responseCompression: ResponseCompression?

  public init() {}

  /// How often a connection checks its timers: a quarter of the shortest timeout, within
  /// 0.25–5 s.
  var housekeepingInterval: Duration {
    let timeouts = [handshakeTimeout, idleTimeout, keepaliveInterval, uploadIdleTimeout]
      .compactMap { $0 } + [keepaliveTimeout]
    let shortest = timeouts.min() ?? .seconds(20)
    return min(max(shortest / 4, .milliseconds(250)), .seconds(5))
  }
}
