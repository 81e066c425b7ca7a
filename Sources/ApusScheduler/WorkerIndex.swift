import ApusProto

/// The connected workers, grouped into classes by the properties they offer, with each
/// class's workers that have a free slot bucketed by how many actions they run: a queued
/// action finds the least-loaded matching worker by looking at a few classes, not at the
/// whole fleet. Which lanes match which classes is cached and recomputed only when a lane
/// or a class appears or goes.
struct WorkerIndex {
  typealias ClassKey = [String: [String]]

  private struct WorkerClass {
    var members: Set<String> = []
    /// `free[n]`: the members running `n` actions that take more (not draining, below
    /// capacity).
    var free: [Set<String>] = []
  }

  let matcher: PlatformMatcher
  private(set) var workers: [String: WorkerRecord] = [:]
  private var classes: [ClassKey: WorkerClass] = [:]
  private var classesForLane: [PlatformKey: [ClassKey]] = [:]
  private var lanesForClass: [ClassKey: [PlatformKey]] = [:]

  init(matcher: PlatformMatcher) { self.matcher = matcher }

  var isEmpty: Bool { workers.isEmpty }
  var count: Int { workers.count }
  subscript(id: String) -> WorkerRecord? { workers[id] }

  mutating func add(_ worker: WorkerRecord) {
    workers[worker.id] = worker
    if classes[worker.properties] == nil {
      classes[worker.properties] = WorkerClass()
      classesChanged()
    }
    classes[worker.properties]?.members.insert(worker.id)
    bucket(worker, insert: true)
  }

  @discardableResult
  mutating func remove(_ id: String) -> WorkerRecord? {
    guard let worker = workers.removeValue(forKey: id) else { return nil }
    bucket(worker, insert: false)
    classes[worker.properties]?.members.remove(id)
    if classes[worker.properties]?.members.isEmpty == true {
      classes[worker.properties] = nil
      classesChanged()
    }
    return worker
  }

  /// Changes a worker's record, keeping its free-slot bucket right.
  mutating func update(_ id: String, _ body: (inout WorkerRecord) -> Void) {
    // Taken out of the dictionary so `body` changes a uniquely referenced record (no copy
    // of its sets).
    guard var worker = workers.removeValue(forKey: id) else { return }
    bucket(worker, insert: false)
    body(&worker)
    bucket(worker, insert: true)
    workers[id] = worker
  }

  /// A message from the worker: it is alive (no bucket changes).
  mutating func touch(_ id: String) {
    workers[id]?.lastSeen = .now
  }

  /// Whether any connected worker could ever run the lane's actions.
  mutating func anyCouldRun(_ lane: PlatformKey) -> Bool { !classes(matching: lane).isEmpty }

  /// The least-loaded worker with a free slot that can run an action of `lane` now (its
  /// `minimum` properties fit what the worker has left).
  mutating func bestWorker(for lane: PlatformKey) -> String? {
    let properties = lane.properties
    let needsFit = !properties.isEmpty
    var best: (id: String, running: Int)?
    for classKey in classes(matching: lane) {
      guard let free = classes[classKey]?.free else { continue }
      search: for (running, ids) in free.enumerated() {
        if let b = best, b.running <= running { break }
        for id in ids {
          guard let worker = workers[id] else { continue }
          if needsFit && !matcher.matches(properties, offered: worker.properties, reserved: worker.reserved) {
            continue
          }
          best = (id, running)
          break search
        }
      }
      if best?.running == 0 { break }
    }
    return best?.id
  }

  /// The lanes (among `all`) whose actions a worker of this class could ever run.
  mutating func lanes(for id: String, among all: some Collection<PlatformKey>) -> [PlatformKey] {
    guard let offered = workers[id]?.properties else { return [] }
    if let cached = lanesForClass[offered] { return cached }
    let found = all.filter { matcher.matches($0.properties, offered: offered) }
    lanesForClass[offered] = found
    return found
  }

  /// Whether the worker could run an action of `lane` now, given its reservations.
  func fits(_ lane: PlatformKey, _ id: String) -> Bool {
    guard let worker = workers[id], worker.hasFreeSlot else { return false }
    return matcher.matches(lane.properties, offered: worker.properties, reserved: worker.reserved)
  }

  /// The queue's set of lanes changed: forget what was matched against it.
  mutating func lanesChanged() {
    classesForLane = [:]
    lanesForClass = [:]
  }

  private mutating func classesChanged() {
    classesForLane = [:]
    lanesForClass = [:]
  }

  private mutating func classes(matching lane: PlatformKey) -> [ClassKey] {
    if let cached = classesForLane[lane] { return cached }
    let properties = lane.properties
    let found = classes.keys.filter { matcher.matches(properties, offered: $0) }
    classesForLane[lane] = found
    return found
  }

  private mutating func bucket(_ worker: WorkerRecord, insert: Bool) {
    guard worker.hasFreeSlot else { return }
    let n = worker.running.count, key = worker.properties
    guard let buckets = classes[key]?.free.count else { return }
    // Optional chaining on the subscript changes the stored class in place (no copy).
    if insert {
      for _ in buckets..<max(buckets, n + 1) { classes[key]?.free.append([]) }
      classes[key]?.free[n].insert(worker.id)
    } else if n < buckets {
      classes[key]?.free[n].remove(worker.id)
    }
  }
}
