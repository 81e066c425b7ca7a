/// How stores size the zstd window of what they keep compressed.
enum StoredZstd {
  /// The window for a blob whose key says `size` bytes at `level`: the smallest power of two
  /// holding it (at least 1 KiB), at most the level's own for large inputs (512 KiB at 1,
  /// 1 MiB at 2, 2 MiB from 3; higher levels' 4–8 MiB are capped at 2 MiB). Stored frames do
  /// not carry their size (an action-cache value's length is not its key's), and a decoder
  /// allocates the window the frame declares, so without this every read of a small blob
  /// would take 0.5–8 MiB.
  static func windowLog(forSize size: Int64, level: Int) -> Int32 {
    let cap: Int32 = level <= 1 ? 19 : level == 2 ? 20 : 21
    var log: Int32 = 10
    while log < cap && (Int64(1) << Int64(log)) < size { log += 1 }
    return log
  }
}
