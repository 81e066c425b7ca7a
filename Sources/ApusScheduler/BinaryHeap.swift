/// A min-heap: O(log n) insert and pop, O(1) peek. The queue's lanes use it (the package
/// has no swift-collections dependency, and this is all they need of one).
struct BinaryHeap<Element: Comparable> {
  private(set) var elements: [Element] = []

  var count: Int { elements.count }
  var isEmpty: Bool { elements.isEmpty }
  var min: Element? { elements.first }

  mutating func insert(_ element: Element) {
    elements.append(element)
    var child = elements.count - 1
    while child > 0 {
      let parent = (child - 1) / 2
      guard elements[child] < elements[parent] else { break }
      elements.swapAt(child, parent)
      child = parent
    }
  }

  @discardableResult
  mutating func popMin() -> Element? {
    guard !elements.isEmpty else { return nil }
    elements.swapAt(0, elements.count - 1)
    let top = elements.removeLast()
    siftDown(from: 0)
    return top
  }

  /// Keeps only the elements `keep` accepts, in O(n).
  mutating func filter(_ keep: (Element) -> Bool) {
    elements.removeAll { !keep($0) }
    var i = elements.count / 2
    while i > 0 {
      i -= 1
      siftDown(from: i)
    }
  }

  private mutating func siftDown(from start: Int) {
    var parent = start
    while true {
      let left = 2 * parent + 1, right = left + 1
      var smallest = parent
      if left < elements.count && elements[left] < elements[smallest] { smallest = left }
      if right < elements.count && elements[right] < elements[smallest] { smallest = right }
      guard smallest != parent else { return }
      elements.swapAt(parent, smallest)
      parent = smallest
    }
  }
}
