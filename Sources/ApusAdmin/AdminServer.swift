import ApusConfig
import ApusRPC
import ApusServer
import ApusServices
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import ServiceLifecycle

/// The operator's HTTP/1.1 listener (`admin` in the config): metrics, health, the status
/// feed and page, drain. A `Service` that runs until graceful shutdown; it is started first
/// and so stopped last, and keeps answering `/readyz` (503) while the other roles drain.
///
/// Each connection is a child task reading requests in order (keep-alive); request bodies
/// are refused above 64 KiB, as no endpoint takes one.
public final class AdminServer: Service {
  private let config: AdminConfig
  private let endpoints: AdminEndpoints
  private let tls: ServerTLS?
  private let logger: Logger

  static let maxBodyBytes = 64 * 1024
  /// A connection with no request for this long is closed.
  static let idleTimeout = TimeAmount.seconds(60)

  public init(config: AdminConfig, targets: AdminTargets, version: String, logger: Logger) async throws {
    self.config = config
    self.logger = logger
    if let auth = targets.config.auth {
      authorizer = try await Authorizer(config: auth, logger: logger)
    } else {
      authorizer = nil
    }
    tls = try config.tls.map {
      try ApusServer.loadTLS($0, path: "admin.tls", applicationProtocols: ["http/1.1"])
    }
    endpoints = AdminEndpoints(
      targets: targets, authorizer: authorizer, anonymousRead: config.anonymousRead, version: version, logger: logger)
  }
  private let authorizer: Authorizer?

  public func run() async throws {
    guard let (host, port) = ServerConfig.splitHostPort(config.listen) else {
      throw ConfigError(path: "admin.listen", "expected host:port, got \"\(config.listen)\"")
    }
    let tls = self.tls
    let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
      .serverChannelOption(.backlog, value: 64)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .bind(host: host, port: port) { child in
        child.eventLoop.makeCompletedFuture {
          let pipeline = child.pipeline.syncOperations
          if let tls { try pipeline.addHandler(NIOSSLServerHandler(context: tls.context)) }
          try pipeline.addHandler(IdleStateHandler(readTimeout: Self.idleTimeout))
          try pipeline.addHandler(CloseWhenIdle())
          try pipeline.configureHTTPServerPipeline(withErrorHandling: true)
          return try NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>(wrappingChannelSynchronously: child)
        }
      }
    let address = channel.channel.localAddress
    logger.info("admin endpoints up", metadata: ["address": "\(address.map { "\($0)" } ?? config.listen)", "tls": "\(tls != nil)"])
    let logger = self.logger
    try await withGracefulShutdownHandler {
      try await withThrowingDiscardingTaskGroup { group in
        if let tls {
          group.addTask { await ApusServer.watchCertificates([tls], logger: logger) }
        }
        try await channel.executeThenClose { connections in
          for try await connection in connections {
            group.addTask { await self.serve(connection) }
          }
        }
        group.cancelAll()
      }
    } onGracefulShutdown: {
      // Stopped last (see `Apus.swift`): by now every other role has drained.
      channel.channel.close(promise: nil)
    }
  }

  private func serve(_ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>) async {
    let peer = connection.channel.remoteAddress.map { "\($0)" } ?? "?"
    // Read at the first request: by then the TLS handshake has verified any certificate.
    var certificate: ClientCertificateNames??
    do {
      try await connection.executeThenClose { inbound, outbound in
        var head: HTTPRequestHead?
        var bodyBytes = 0
        for try await part in inbound {
          switch part {
          case .head(let h):
            head = h
            bodyBytes = 0
          case .body(let chunk):
            bodyBytes += chunk.readableBytes
          case .end:
            guard let request = head else { continue }
            head = nil
            if tls != nil, certificate == nil {
              certificate = .some(
                try? await connection.channel.pipeline.handler(type: NIOSSLServerHandler.self).map {
                  $0.peerCertificate.map(ClientCertificateNames.init)
                }.get())
            }
            let response: AdminResponse
            if bodyBytes > Self.maxBodyBytes {
              response = .error(.payloadTooLarge, "no admin endpoint takes a body")
            } else {
              response = await endpoints.respond(
                .init(
                  method: request.method, path: request.uri,
                  authorization: request.headers.first(name: "authorization"),
                  clientCertificate: certificate ?? nil, peer: peer))
            }
            try await write(response, to: outbound, head: request)
            if !request.isKeepAlive { return }
          }
        }
      }
    } catch {
      logger.debug("admin connection ended", metadata: ["peer": "\(peer)", "error": "\(error)"])
    }
  }

  private func write(
    _ response: AdminResponse, to outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>,
    head request: HTTPRequestHead
  ) async throws {
    var headers = HTTPHeaders()
    headers.add(name: "content-type", value: response.contentType)
    headers.add(name: "content-length", value: "\(response.body.count)")
    headers.add(name: "cache-control", value: "no-store")
    for (name, value) in response.headers { headers.add(name: name, value: value) }
    if !request.isKeepAlive { headers.add(name: "connection", value: "close") }
    try await outbound.write(.head(HTTPResponseHead(version: request.version, status: response.status, headers: headers)))
    if request.method != .HEAD {
      try await outbound.write(.body(.byteBuffer(ByteBuffer(bytes: response.body))))
    }
    try await outbound.write(.end(nil))
  }
}

/// Closes a connection when `IdleStateHandler` reports it idle.
private final class CloseWhenIdle: ChannelInboundHandler, Sendable {
  typealias InboundIn = ByteBuffer

  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    if event is IdleStateHandler.IdleStateEvent {
      context.close(promise: nil)
    } else {
      context.fireUserInboundEventTriggered(event)
    }
  }
}
