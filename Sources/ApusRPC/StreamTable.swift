/// A connection's streams by HTTP/2 stream id: open addressing over the ids alone, hashed
/// by one multiplication, because nghttp2 calls back with an id for every header and frame
/// (about a dozen look-ups per small call) and a `Dictionary` hashes each with SipHash.
///
/// Ids are the peer's choice, so the multiplier is random per process (a peer cannot aim
/// its ids at one slot), and a connection never holds more streams than
/// `SETTINGS_MAX_CONCURRENT_STREAMS`, which bounds any probe run.
struct StreamTable<Value: AnyObject> {
  /// Stream id per slot; 0 (never a stream's id) marks an empty slot. Probing reads only
  /// these, so it retains nothing.
  private var ids: [Int32] = []
  private var values: [Value?] = []
  private(set) var count = 0
  /// 32 minus log2 of the slot count: the top bits of the product pick the home slot.
  private var shift: UInt32 = 32
  private let multiplier = streamIDMultiplier

  var isEmpty: Bool { count == 0 }

  /// The streams, in no particular order.
  var all: [Value] { values.compactMap { $0 } }

  subscript(id: Int32) -> Value? {
    get { slot(of: id).map { values[$0] } ?? nil }
    set {
      if let newValue { insert(id, newValue) } else { _ = removeValue(forKey: id) }
    }
  }

  @discardableResult
  mutating func removeValue(forKey id: Int32) -> Value? {
    guard let start = slot(of: id) else { return nil }
    let value = values[start].take()
    ids[start] = 0
    count -= 1
    // Backward-shift deletion: later entries of the probe run move up, so no tombstones.
    let mask = ids.count - 1
    var hole = start
    var s = start
    while true {
      s = (s + 1) & mask
      guard ids[s] != 0 else { break }
      let home = self.home(ids[s])
      // The entry at `s` may fill the hole unless its home lies cyclically in (hole, s].
      let staysPut = hole <= s ? (hole < home && home <= s) : (hole < home || home <= s)
      if !staysPut {
        ids[hole] = ids[s]
        values[hole] = values[s].take()
        ids[s] = 0
        hole = s
      }
    }
    // A connection that once had many streams does not keep their table.
    if ids.count > 16 && count * 8 < ids.count { resize(ids.count / 2) }
    return value
  }

  mutating func removeAll() {
    ids = []
    values = []
    count = 0
    shift = 32
  }

  private func home(_ id: Int32) -> Int {
    Int(truncatingIfNeeded: (UInt32(bitPattern: id) &* multiplier) >> shift)
  }

  private func slot(of id: Int32) -> Int? {
    guard !ids.isEmpty, id != 0 else { return nil }
    let mask = ids.count - 1
    var s = home(id)
    while ids[s] != 0 {
      if ids[s] == id { return s }
      s = (s + 1) & mask
    }
    return nil
  }

  private mutating func insert(_ id: Int32, _ value: Value) {
    precondition(id != 0, "stream id 0 is the connection")
    if let s = slot(of: id) {
      values[s] = value
      return
    }
    if (count + 1) * 4 > ids.count * 3 { resize(max(8, ids.count * 2)) }
    place(id, value)
    count += 1
  }

  private mutating func place(_ id: Int32, _ value: Value) {
    let mask = ids.count - 1
    var s = home(id)
    while ids[s] != 0 { s = (s + 1) & mask }
    ids[s] = id
    values[s] = value
  }

  private mutating func resize(_ slots: Int) {
    let oldIDs = ids
    var oldValues = values
    ids = [Int32](repeating: 0, count: slots)
    values = [Value?](repeating: nil, count: slots)
    shift = UInt32(32 - slots.trailingZeroBitCount)
    for i in oldIDs.indices where oldIDs[i] != 0 {
      if let value = oldValues[i].take() { place(oldIDs[i], value) }
    }
  }
}

/// Odd, so multiplication permutes the ids; random, so a peer cannot predict collisions.
private let streamIDMultiplier = UInt32.random(in: 0...UInt32.max) | 1
