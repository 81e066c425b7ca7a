import ApusProto

/// A key of an ``LRUIndex``, hashed by the index with a seed of its own.
///
/// Any `Hashable` key works through `hashValue` (SipHash, seeded per process). A digest, the
/// key of every store index, hashes its four words with a few multiplications instead: a
/// FindMissingBlobs of 10 digests spent about 3% of the server's CPU in SipHash.
protocol LRUIndexKey: Hashable {
  func indexHash(_ seed: LRUIndexSeed) -> Int
}

extension LRUIndexKey {
  func indexHash(_ seed: LRUIndexSeed) -> Int { hashValue }
}

/// Random keys mixed into every hash of one index, so clients choosing action digests
/// cannot aim many of them at one probe run: where an entry lands depends on these.
struct LRUIndexSeed {
  let k0, k1, k2, k3, k4: UInt64

  init() {
    var rng = SystemRandomNumberGenerator()
    (k0, k1, k2, k3, k4) = (rng.next(), rng.next(), rng.next(), rng.next(), rng.next())
  }

  /// The 128-bit product's halves folded together: a cheap mix of both inputs, though its
  /// low bits depend only weakly on some input bits (`avalanche` fixes that).
  @inline(__always)
  static func fold(_ x: UInt64, _ y: UInt64) -> UInt64 {
    let product = x.multipliedFullWidth(by: y)
    return product.high ^ product.low
  }

  /// MurmurHash3's 64-bit finalizer: a fold leaves its low bits depending little on
  /// input bits that sit in the middle of a word; this carries every bit down.
  @inline(__always)
  static func avalanche(_ x: UInt64) -> UInt64 {
    var h = x
    h ^= h >> 33
    h &*= 0xff51_afd7_ed55_8ccd
    h ^= h >> 33
    h &*= 0xc4ce_b9fe_1a85_ec53
    return h ^ (h >> 33)
  }
}

extension BlobDigest: LRUIndexKey {
  @inline(__always)
  func indexHash(_ seed: LRUIndexSeed) -> Int {
    // Words are mixed in pairs before they meet: xor-ing two raw words first would let
    // keys that trade bits between them collide whatever the seed.
    let a = LRUIndexSeed.fold(h0 ^ seed.k0, h1 ^ seed.k1)
    let b = LRUIndexSeed.fold(h2 ^ seed.k2, h3 ^ seed.k3)
    let c = LRUIndexSeed.fold(a ^ UInt64(bitPattern: sizeBytes), b ^ seed.k4)
    return Int(truncatingIfNeeded: LRUIndexSeed.avalanche(c))
  }
}
