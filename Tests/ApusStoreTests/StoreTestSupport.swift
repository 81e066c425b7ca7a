import ApusProto
import ApusStore
import ApusTestSupport
import Foundation

#if canImport(Glibc)
  import Glibc
#endif

func digestOf(_ bytes: [UInt8]) -> BlobDigest { SHA256Hasher.digest(of: bytes) }

func randomBytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8.random(in: 0...255) } }

/// A fresh directory for a store test, removed when the test process exits.
func temporaryDirectory() -> String { ApusTestSupport.temporaryDirectory("apus-test") }

/// Chunks that fail after yielding `failAfter` chunks: a client that disconnects mid-upload.
/// Each is handed over as a slice in the middle of a larger array, as an upload's data is a
/// slice of its message: stores must not assume chunks start at index 0 or own their array.
struct FailingChunks: AsyncSequence {
  typealias Element = ArraySlice<UInt8>
  let chunks: [[UInt8]]
  let failAfter: Int

  struct Disconnected: Error {}

  struct AsyncIterator: AsyncIteratorProtocol {
    var chunks: [[UInt8]]
    var remaining: Int
    mutating func next() async throws -> ArraySlice<UInt8>? {
      guard remaining > 0 else { throw Disconnected() }
      remaining -= 1
      guard !chunks.isEmpty else { return nil }
      let chunk = chunks.removeFirst()
      return ([0xEE, 0xEE, 0xEE] + chunk + [0xEE])[3..<(3 + chunk.count)]
    }
  }

  func makeAsyncIterator() -> AsyncIterator { AsyncIterator(chunks: chunks, remaining: failAfter) }
}

func readRange(_ store: any BlobStore, _ d: BlobDigest, offset: Int64 = 0, limit: Int64? = nil)
  async throws -> [UInt8]?
{
  var out: [UInt8] = []
  let found = try await store.read(d, offset: offset, limit: limit) { out.append(contentsOf: $0) }
  return found ? out : nil
}

/// A listening socket that is never accepted from: connections complete in the kernel's
/// backlog and requests get no answer, like a frozen (SIGSTOPped) S3.
final class SilentListener: Sendable {
  let fd: Int32
  let port: Int
  init() throws {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &addr) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { p in
        bind(fd, p, len) == 0 && listen(fd, 64) == 0 && getsockname(fd, p, &len) == 0
      }
    }
    guard bound else {
      close(fd)
      throw StoreError(.internal, "cannot listen")
    }
    self.fd = fd
    port = Int(UInt16(bigEndian: addr.sin_port))
  }
  deinit { close(fd) }
}
