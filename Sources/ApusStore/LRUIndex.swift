/// A least-recently-used index with byte, count and age limits, O(1) per operation.
///
/// Nodes live in one array linked by indices (no per-entry heap object), so the index
/// costs a few dozen bytes per entry beyond the key and value.
struct LRUIndex<Key: Hashable, Value> {
  private struct Node {
    var key: Key
    var value: Value
    var size: Int64
    var lastAccess: UInt32
    var prev: Int32
    var next: Int32
  }

  private var nodes: [Node] = []
  private var freeList: [Int32] = []
  private var positions: [Key: Int32] = [:]
  private var head: Int32 = -1  // most recent
  private var tail: Int32 = -1  // least recent
  private(set) var totalBytes: Int64 = 0

  var count: Int { positions.count }

  func contains(_ key: Key) -> Bool { positions[key] != nil }

  /// Looks up and marks as most recently used.
  mutating func get(_ key: Key, now: UInt32) -> Value? {
    guard let i = positions[key] else { return nil }
    nodes[Int(i)].lastAccess = now
    moveToFront(i)
    return nodes[Int(i)].value
  }

  func peek(_ key: Key) -> Value? {
    positions[key].map { nodes[Int($0)].value }
  }

  /// Inserts or replaces.
  mutating func set(_ key: Key, _ value: Value, size: Int64, now: UInt32) {
    if let i = positions[key] {
      totalBytes += size - nodes[Int(i)].size
      nodes[Int(i)].value = value
      nodes[Int(i)].size = size
      nodes[Int(i)].lastAccess = now
      moveToFront(i)
      return
    }
    let node = Node(key: key, value: value, size: size, lastAccess: now, prev: -1, next: head)
    let i: Int32
    if let free = freeList.popLast() {
      i = free
      nodes[Int(i)] = node
    } else {
      i = Int32(nodes.count)
      nodes.append(node)
    }
    if head >= 0 { nodes[Int(head)].prev = i }
    head = i
    if tail < 0 { tail = i }
    positions[key] = i
    totalBytes += size
  }

  @discardableResult
  mutating func remove(_ key: Key) -> Value? {
    guard let i = positions.removeValue(forKey: key) else { return nil }
    unlink(i)
    totalBytes -= nodes[Int(i)].size
    freeList.append(i)
    return nodes[Int(i)].value
  }

  /// Removes least-recently-used entries until every limit holds; returns them.
  mutating func evict(
    maxBytes: Int64?, maxCount: Int?, maxAge: UInt32?, now: UInt32
  ) -> [(Key, Value)] {
    var evicted: [(Key, Value)] = []
    while tail >= 0 {
      let node = nodes[Int(tail)]
      let overBytes = maxBytes.map { totalBytes > $0 } ?? false
      let overCount = maxCount.map { count > $0 } ?? false
      let expired = maxAge.map { now &- node.lastAccess > $0 } ?? false
      guard overBytes || overCount || expired else { break }
      remove(node.key)
      evicted.append((node.key, node.value))
    }
    return evicted
  }

  private mutating func unlink(_ i: Int32) {
    let n = nodes[Int(i)]
    if n.prev >= 0 { nodes[Int(n.prev)].next = n.next } else { head = n.next }
    if n.next >= 0 { nodes[Int(n.next)].prev = n.prev } else { tail = n.prev }
  }

  private mutating func moveToFront(_ i: Int32) {
    guard head != i else { return }
    unlink(i)
    nodes[Int(i)].prev = -1
    nodes[Int(i)].next = head
    if head >= 0 { nodes[Int(head)].prev = i }
    head = i
    if tail < 0 { tail = i }
  }
}
