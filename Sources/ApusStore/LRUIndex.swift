/// A least-recently-used index with byte, count and age limits, O(1) per operation.
///
/// Nodes live in one array linked by indices (no per-entry heap object), and the hash table
/// over them holds only 4-byte node indices (open addressing, linear probing), so each key is
/// stored once: an entry costs its node plus about 8 bytes of table. A `Dictionary` keyed by
/// the digest cost about twice that per entry, which matters at millions of entries.
struct LRUIndex<Key: LRUIndexKey, Value> {
  private struct Node {
    var key: Key
    /// nil once removed, so a free node does not keep its value alive.
    var value: Value?
    var size: Int64
    var lastAccess: UInt32
    var prev: Int32
    var next: Int32
  }

  private static var emptySlot: Int32 { -1 }

  private var nodes: [Node] = []
  private var freeList: [Int32] = []
  /// Node index per slot, or `emptySlot`; the count is a power of two, at most 3/4 full.
  private var slots: [Int32] = []
  private var head: Int32 = -1  // most recent
  private var tail: Int32 = -1  // least recent
  private(set) var totalBytes: Int64 = 0
  private(set) var count = 0
  private let seed = LRUIndexSeed()

  func contains(_ key: Key) -> Bool { slot(of: key).found }

  /// Whether `key` is held; marks it as most recently used. Cheaper than `get` when only
  /// presence matters: the value is not copied out (no retain and release of it).
  mutating func touch(_ key: Key, now: UInt32) -> Bool { used(key, now: now) != nil }

  /// Looks up and marks as most recently used.
  mutating func get(_ key: Key, now: UInt32) -> Value? {
    guard let i = used(key, now: now) else { return nil }
    return nodes[Int(i)].value
  }

  /// The node holding `key`, marked as most recently used; nil if absent.
  private mutating func used(_ key: Key, now: UInt32) -> Int32? {
    let (s, found) = slot(of: key)
    guard found else { return nil }
    let i = slots[s]
    nodes[Int(i)].lastAccess = now
    moveToFront(i)
    return i
  }

  func peek(_ key: Key) -> Value? {
    let (s, found) = slot(of: key)
    return found ? nodes[Int(slots[s])].value : nil
  }

  /// Inserts or replaces.
  mutating func set(_ key: Key, _ value: Value, size: Int64, now: UInt32) {
    if case (let s, true) = slot(of: key) {
      let i = Int(slots[s])
      totalBytes += size - nodes[i].size
      nodes[i].value = value
      nodes[i].size = size
      nodes[i].lastAccess = now
      moveToFront(Int32(i))
      return
    }
    if (count + 1) * 4 > slots.count * 3 { grow() }
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
    slots[slot(of: key).slot] = i
    count += 1
    totalBytes += size
  }

  @discardableResult
  mutating func remove(_ key: Key) -> Value? {
    let (s, found) = slot(of: key)
    guard found else { return nil }
    let i = slots[s]
    deleteSlot(s)
    unlink(i)
    totalBytes -= nodes[Int(i)].size
    count -= 1
    let value = nodes[Int(i)].value.take()
    freeList.append(i)
    return value
  }

  /// Removes least-recently-used entries until every limit holds; returns them. Entries
  /// `pinned` says to keep are moved to the front instead, so the limits may stay exceeded
  /// when only pinned entries are left.
  mutating func evict(
    maxBytes: Int64?, maxCount: Int?, maxAge: UInt32?, now: UInt32,
    pinned: (Key) -> Bool = { _ in false }
  ) -> [(Key, Value)] {
    var evicted: [(Key, Value)] = []
    var kept = 0
    while tail >= 0, kept < count {
      // Fields read one by one: a copy of the node would retain and release its value,
      // and this runs on every look-up of a memory store.
      let overBytes = maxBytes.map { totalBytes > $0 } ?? false
      let overCount = maxCount.map { count > $0 } ?? false
      let expired = maxAge.map { now &- nodes[Int(tail)].lastAccess > $0 } ?? false
      guard overBytes || overCount || expired else { break }
      let key = nodes[Int(tail)].key
      if pinned(key) {
        moveToFront(tail)
        kept += 1
        continue
      }
      guard let value = remove(key) else { break }
      evicted.append((key, value))
    }
    return evicted
  }

  // MARK: - Hash table

  /// The slot holding `key`, or the empty slot where it would go (-1 while the table is empty).
  private func slot(of key: Key) -> (slot: Int, found: Bool) {
    guard !slots.isEmpty else { return (-1, false) }
    let mask = slots.count - 1
    var s = key.indexHash(seed) & mask
    while true {
      let i = slots[s]
      if i == Self.emptySlot { return (s, false) }
      if nodes[Int(i)].key == key { return (s, true) }
      s = (s + 1) & mask
    }
  }

  private mutating func grow() {
    let old = slots
    slots = [Int32](repeating: Self.emptySlot, count: max(16, old.count * 2))
    let mask = slots.count - 1
    for i in old where i != Self.emptySlot {
      var s = nodes[Int(i)].key.indexHash(seed) & mask
      while slots[s] != Self.emptySlot { s = (s + 1) & mask }
      slots[s] = i
    }
  }

  /// Backward-shift deletion: later entries of the probe run move up, so no tombstones.
  private mutating func deleteSlot(_ start: Int) {
    let mask = slots.count - 1
    var hole = start
    var s = start
    while true {
      s = (s + 1) & mask
      let i = slots[s]
      if i == Self.emptySlot { break }
      let home = nodes[Int(i)].key.indexHash(seed) & mask
      // The entry at `s` may fill the hole unless its home lies cyclically in (hole, s].
      let staysPut = hole <= s ? (hole < home && home <= s) : (hole < home || home <= s)
      if !staysPut {
        slots[hole] = i
        hole = s
      }
    }
    slots[hole] = Self.emptySlot
  }

  // MARK: - Recency list

  private mutating func unlink(_ i: Int32) {
    // The links only: copying the node would retain and release its value.
    let prev = nodes[Int(i)].prev
    let next = nodes[Int(i)].next
    if prev >= 0 { nodes[Int(prev)].next = next } else { head = next }
    if next >= 0 { nodes[Int(next)].prev = prev } else { tail = prev }
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
