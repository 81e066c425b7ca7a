import NIOCore
import NIOPosix
import Synchronization
import Testing

@testable import ApusStore

@Suite("S3 client", .timeLimit(.minutes(3)))
struct S3ClientTests {
  final class Holder: Sendable {
    let client: Mutex<S3Client?>
    init(_ client: S3Client) { self.client = Mutex(client) }
  }

  @Test("the last reference may drop on an event loop")
  func releasedOnEventLoop() async throws {
    let location = S3Location(
      endpoint: "http://127.0.0.1:9", region: "us-east-1", bucket: "b", pathStyle: true,
      accessKeyID: "k", secretAccessKey: "s", sessionToken: nil, maxAttempts: 1,
      requestTimeout: .seconds(1))
    let holder = Holder(try S3Client(location: location))
    // A blocking shutdown in deinit would trap here ("must not be called when on an EventLoop").
    let released = try await MultiThreadedEventLoopGroup.singleton.next().submit {
      holder.client.withLock { client -> Bool in
        client = nil
        return client == nil
      }
    }.get()
    #expect(released)
  }
}
