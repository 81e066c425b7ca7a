/// Wrapper nodes built in code (tests, the built-in default) with the kinds' own defaults.
extension StoreSpec {
  public static func verify(backend: StoreSpec, verifyHash: Bool = true) -> StoreSpec {
    .verify(VerifyStoreSpec(backend: backend, verifyHash: verifyHash))
  }

  public static func fastSlow(
    fast: StoreSpec, slow: StoreSpec, fillFastOnRead: Bool = true, writeFast: Bool = true
  ) -> StoreSpec {
    .fastSlow(FastSlowStoreSpec(fast: fast, slow: slow, fillFastOnRead: fillFastOnRead, writeFast: writeFast))
  }

  public static func existenceCache(
    backend: StoreSpec, maxSeconds: Int64 = 600, maxCount: Int64 = 1_000_000
  ) -> StoreSpec {
    .existenceCache(ExistenceCacheStoreSpec(backend: backend, maxSeconds: maxSeconds, maxCount: maxCount))
  }
}
