import Testing

@testable import ApusRPC

@Suite("StreamTable")
struct StreamTableTests {
  final class Box {
    let id: Int32
    init(_ id: Int32) { self.id = id }
  }

  @Test("agrees with a Dictionary through random inserts, replacements and removals")
  func matchesDictionary() {
    var table = StreamTable<Box>()
    var reference: [Int32: Box] = [:]
    var generator = SystemRandomNumberGenerator()
    for step in 0..<20_000 {
      // Ids from a small range, so removals, replacements and long probe runs all happen.
      let id = Int32.random(in: 1...600, using: &generator) * 2 - 1
      switch Int.random(in: 0..<3, using: &generator) {
      case 0, 1:
        let box = Box(id)
        table[id] = box
        reference[id] = box
      default:
        #expect(table.removeValue(forKey: id) === reference.removeValue(forKey: id))
      }
      if step % 997 == 0 {
        for (key, box) in reference { #expect(table[key] === box) }
        #expect(Set(table.all.map { ObjectIdentifier($0) }) == Set(reference.values.map { ObjectIdentifier($0) }))
      }
      #expect(table.count == reference.count)
    }
    for key in reference.keys { table[key] = nil }
    #expect(table.isEmpty && table.all.isEmpty)
  }

  @Test("ids that share their low bits spread out, and absent ids are not found")
  func strideOfIds() {
    var table = StreamTable<Box>()
    let ids = (0..<1000).map { Int32(1 + $0 * 65_536) }
    for id in ids { table[id] = Box(id) }
    #expect(table.count == 1000)
    for id in ids { #expect(table[id]?.id == id) }
    #expect(table[3] == nil && table[0] == nil)
    table.removeAll()
    #expect(table.isEmpty && table[1] == nil)
  }
}
