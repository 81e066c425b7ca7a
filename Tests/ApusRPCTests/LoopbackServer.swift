import Logging
import NIOPosix

@testable import ApusRPC

/// Runs `body` with a client of a server on a loopback port, then closes both, also when
/// `body` throws.
func withLoopbackServer(
  _ router: RPCRouter, server serverOptions: GRPCServerOptions = .init(),
  client clientOptions: GRPCServerOptions = .init(), _ body: (GRPCClient) async throws -> Void
) async throws {
  let server = GRPCServer(
    router: router, options: serverOptions, group: MultiThreadedEventLoopGroup.singleton,
    logger: Logger(label: "test"))
  let address = try await server.start(host: "127.0.0.1", port: 0)
  guard let port = address.port else { throw RPCError(.internal, "the server has no port") }
  let client = GRPCClient(host: "127.0.0.1", port: port, options: clientOptions)
  do {
    try await body(client)
  } catch {
    await client.close()
    await server.shutdown(grace: .seconds(1))
    throw error
  }
  await client.close()
  await server.shutdown(grace: .seconds(1))
}
