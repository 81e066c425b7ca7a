/// The queued actions of a scheduler: one priority queue ("lane") per distinct
/// `PlatformKey`, ordered by REAPI priority (lower first) then arrival (`sequence`).
///
/// Enqueue and pop are O(log n); removal (cancel, a late result) is O(1) and lazy: the
/// entry stays in its lane's heap, marked dead by its generation, and is skipped when it
/// reaches the top or swept when dead entries outnumber live ones. Holds names only; the
/// operations themselves stay with their owner, so another state backend can replace this
/// type without touching the records.
struct ActionQueue {
  struct Entry: Comparable {
    let priority: Int32
    let sequence: UInt64
    let generation: UInt64
    let name: String
    static func < (a: Entry, b: Entry) -> Bool { (a.priority, a.sequence) < (b.priority, b.sequence) }
    static func == (a: Entry, b: Entry) -> Bool { a.generation == b.generation }
  }

  struct Lane {
    let key: PlatformKey
    var heap = BinaryHeap<Entry>()
    var live = 0
    /// Since when workers are connected but none could ever run this lane's actions.
    var unsatisfiableSince: ContinuousClock.Instant?
  }

  private struct Member {
    let key: PlatformKey
    let generation: UInt64
    let instance: String
  }

  private(set) var lanes: [PlatformKey: Lane] = [:]
  private var members: [String: Member] = [:]
  private var perInstance: [String: Int] = [:]
  private var nextGeneration: UInt64 = 0

  /// Queued actions, all instances.
  var count: Int { members.count }
  func count(instance: String) -> Int { perInstance[instance, default: 0] }
  func contains(_ name: String) -> Bool { members[name] != nil }
  /// The names queued, in no particular order (for a snapshot).
  var names: [String] { Array(members.keys) }

  /// The lane's own copy of an equal key, so records share its storage (memory per queued
  /// action), or `key` itself for a new one.
  func canonical(_ key: PlatformKey) -> PlatformKey { lanes[key]?.key ?? key }

  /// Queues `name`; returns true if this created a new lane (a key not seen before).
  @discardableResult
  mutating func insert(
    _ name: String, key: PlatformKey, instance: String, priority: Int32, sequence: UInt64
  ) -> Bool {
    if members[name] != nil { remove(name) }
    nextGeneration += 1
    members[name] = Member(key: key, generation: nextGeneration, instance: instance)
    perInstance[instance, default: 0] += 1
    let entry = Entry(priority: priority, sequence: sequence, generation: nextGeneration, name: name)
    if lanes[key] == nil {
      var lane = Lane(key: key)
      lane.heap.insert(entry)
      lane.live = 1
      lanes[key] = lane
      return true
    }
    lanes[key]?.heap.insert(entry)
    lanes[key]?.live += 1
    return false
  }

  /// Takes `name` out of the queue; false if it was not queued.
  @discardableResult
  mutating func remove(_ name: String) -> Bool {
    guard let member = members.removeValue(forKey: name) else { return false }
    perInstance[member.instance, default: 1] -= 1
    if perInstance[member.instance] == 0 { perInstance[member.instance] = nil }
    lanes[member.key]?.live -= 1
    sweep(member.key)
    return true
  }

  /// The first live entry of a lane, dropping dead ones above it.
  mutating func head(_ key: PlatformKey) -> Entry? {
    while let top = lanes[key]?.heap.min {
      if members[top.name]?.generation == top.generation { return top }
      lanes[key]?.heap.popMin()
    }
    return nil
  }

  /// Removes and returns the first live entry of a lane.
  mutating func pop(_ key: PlatformKey) -> Entry? {
    guard let top = head(key) else { return nil }
    remove(top.name)
    return top
  }

  /// The live entries of a lane, in no particular order.
  func entries(_ key: PlatformKey) -> [Entry] {
    lanes[key]?.heap.elements.filter { members[$0.name]?.generation == $0.generation } ?? []
  }

  mutating func setUnsatisfiableSince(_ key: PlatformKey, _ since: ContinuousClock.Instant?) {
    lanes[key]?.unsatisfiableSince = since
  }

  /// Forgets empty lanes; returns whether any went (the caller's match caches name lanes).
  mutating func dropEmptyLanes() -> Bool {
    let empty = lanes.values.filter { $0.live == 0 }.map(\.key)
    for key in empty { lanes[key] = nil }
    return !empty.isEmpty
  }

  /// Rebuilds a lane's heap once dead entries outnumber live ones, so a cancel-heavy load
  /// cannot grow it without bound; amortised O(1) per removal.
  private mutating func sweep(_ key: PlatformKey) {
    guard let lane = lanes[key], lane.heap.count > 2 * lane.live + 32 else { return }
    lanes[key]?.heap.filter { members[$0.name]?.generation == $0.generation }
  }
}
