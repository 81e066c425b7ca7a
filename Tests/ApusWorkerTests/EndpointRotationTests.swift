import Testing

@testable import ApusWorker

@Suite("EndpointRotation")
struct EndpointRotationTests {
  func endpoint(_ url: String, _ host: String, _ name: String? = nil) -> SchedulerEndpoint {
    SchedulerEndpoint(url: url, host: host, port: 1, serverName: name)
  }

  @Test("walks every address of every url in order, then resolves again")
  func rotation() {
    var resolved = 0
    let table: [String: [String]] = ["grpc://s:1": ["10.0.0.1", "10.0.0.2"], "grpc://10.0.0.9:1": ["10.0.0.9"]]
    let resolve = { (url: String) -> [SchedulerEndpoint] in
      resolved += 1
      return table[url, default: []].map { self.endpoint(url, $0, url == "grpc://s:1" ? "s" : nil) }
    }
    var rotation = EndpointRotation(urls: ["grpc://s:1", "grpc://10.0.0.9:1"])
    #expect(rotation.needsResolving)
    #expect(rotation.current == nil)
    var seen: [String] = []
    for _ in 0..<2 {
      if rotation.needsResolving { rotation.refill(rotation.resolveAll(resolve)) }
      while let e = rotation.current {
        seen.append(e.host)
        rotation.advance()
      }
    }
    #expect(seen == ["10.0.0.1", "10.0.0.2", "10.0.0.9", "10.0.0.1", "10.0.0.2", "10.0.0.9"])
    #expect(resolved == 4)  // two urls, two rounds
  }

  @Test("parses grpc and grpcs urls, IPv6 in brackets; rejects others")
  func parse() {
    func text(_ url: String) -> String? {
      SchedulerEndpoint.parse(url).map { "\($0.host) \($0.port) \($0.tls)" }
    }
    #expect(text("grpc://h:5") == "h 5 false")
    #expect(text("grpcs://[::1]:7") == "::1 7 true")
    #expect(SchedulerEndpoint.parse("http://h:5") == nil)
    #expect(SchedulerEndpoint.parse("grpc://h") == nil)
    #expect(SchedulerEndpoint.parse("grpc://:5") == nil)
    #expect(SchedulerEndpoint.parse("grpc://h:0") == nil)
  }

  @Test("an IP address is one endpoint; localhost resolves to its loopback addresses, named for TLS")
  func resolve() {
    #expect(SchedulerEndpoint.resolve("grpc://127.0.0.1:9") == [endpoint("grpc://127.0.0.1:9", "127.0.0.1").with(port: 9)])
    let local = SchedulerEndpoint.resolve("grpcs://localhost:9")
    #expect(!local.isEmpty)
    #expect(local.allSatisfy { SchedulerEndpoint.isIPAddress($0.host) && $0.serverName == "localhost" && $0.port == 9 })
    #expect(Set(local.map(\.host)).count == local.count)
    // A name that does not resolve stays one endpoint: dialing it reports the DNS error.
    let missing = SchedulerEndpoint.resolve("grpc://no-such-host.invalid:9")
    #expect(missing == [SchedulerEndpoint(url: "grpc://no-such-host.invalid:9", host: "no-such-host.invalid", port: 9, serverName: nil)])
  }
}

extension SchedulerEndpoint {
  fileprivate func with(port: Int) -> SchedulerEndpoint {
    var copy = self
    copy.port = port
    return copy
  }
}
