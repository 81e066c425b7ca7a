import ApusProto

#if canImport(Glibc)
  import Glibc
#endif

/// The start-up pass over a filesystem store: creates the layout, removes temp files, and
/// lists the entries whose files can be whole, oldest first. A plain file whose size is not
/// its name's size, or a sealed or zstd file without a valid trailer, is moved to `quarantine/`.
/// Blocking: run it on a thread pool.
struct ContentScan: Sendable {
  struct Entry: Sendable {
    var digest: BlobDigest
    var layout: EntryLayout
    var fileSize: Int64
    var mtime: Int
  }

  var entries: [Entry] = []
  /// Paths (before the move) of the files moved to quarantine.
  var quarantined: [String] = []
  /// Older copies of an entry found in both layouts, unlinked.
  var duplicates = 0

  static func run(root: String) throws -> ContentScan {
    try makeDirectories(root)
    for dir in ["\(root)/content", "\(root)/tmp", "\(root)/quarantine"] { try makeDirectory(dir) }
    guard let temps = POSIXPaths.list("\(root)/tmp") else {
      throw StoreError(.internal, "opendir \(root)/tmp: \(POSIXPaths.errorText)")
    }
    for name in temps { unlink("\(root)/tmp/\(name)") }
    var scan = ContentScan()
    let hex = Array("0123456789abcdef")
    for a in hex {
      for b in hex {
        let dir = "\(root)/content/\(a)\(b)"
        try makeDirectory(dir)
        var damaged: [String] = []
        try scanDirectory(dir, into: &scan.entries, damaged: &damaged)
        for name in damaged {
          let from = "\(dir)/\(name)"
          if rename(from, "\(root)/quarantine/\(name)") == 0 { scan.quarantined.append(from) }
        }
      }
    }
    scan.entries.sort { $0.mtime < $1.mtime }
    scan.dropOlderDuplicates(root: root)
    return scan
  }

  /// An entry rewritten in another layout (auto mode, or after `compression` changed) may
  /// have left its older file behind after a crash; the newer one wins.
  private mutating func dropOlderDuplicates(root: String) {
    // Only a digest with a sealed or zstd file can have two.
    let sealed = Set(entries.lazy.filter { $0.layout != .plain }.map(\.digest))
    guard !sealed.isEmpty else { return }
    var seen: Set<BlobDigest> = []
    var keep: [Entry] = []
    for entry in entries.reversed() {
      if sealed.contains(entry.digest), !seen.insert(entry.digest).inserted {
        let hex = entry.digest.hashHex
        unlink(
          "\(root)/content/\(hex.prefix(2))/\(FilesystemStore.fileName(entry.digest, entry.layout))"
        )
        duplicates += 1
        continue
      }
      keep.append(entry)
    }
    entries = keep.reversed()
  }

  /// Appends the entries of `<hash>-<size>[.sealed|.zst]` files in `dir` and the names of damaged
  /// ones. A million files take seconds, so names are parsed as bytes and `fstatat` resolves
  /// them relative to the open directory instead of walking a full path each time.
  private static func scanDirectory(
    _ dir: String, into found: inout [Entry], damaged: inout [String]
  ) throws {
    guard let handle = opendir(dir) else {
      throw StoreError(.internal, "opendir \(dir): \(POSIXPaths.errorText)")
    }
    defer { closedir(handle) }
    let fd = dirfd(handle)
    let suffixes: [(EntryLayout, [UInt8])] = [.sealed, .zstd].map { ($0, Array($0.suffix.utf8)) }
    while let entry = readdir(handle) {
      withUnsafeBytes(of: &entry.pointee.d_name) { raw in
        let name = raw.bindMemory(to: UInt8.self)
        // `<64 hex>-<decimal size>[.sealed|.zst]\0`
        guard name.count > 66, name[64] == UInt8(ascii: "-"), let base = name.baseAddress else {
          return
        }
        var size: Int64 = 0
        var i = 65
        while i < name.count, name[i] != 0, name[i] != UInt8(ascii: ".") {
          let digit = name[i] &- UInt8(ascii: "0")
          guard digit < 10, size < Int64.max / 10 else { return }
          size = size * 10 + Int64(digit)
          i += 1
        }
        guard i > 65, i < name.count else { return }
        var end = i
        var layout = EntryLayout.plain
        if name[i] != 0 {
          guard
            let (named, suffix) = suffixes.first(where: { _, suffix in
              i + suffix.count < name.count && name[i..<(i + suffix.count)].elementsEqual(suffix)
                && name[i + suffix.count] == 0
            })
          else { return }
          layout = named
          end = i + suffix.count
        }
        guard
          let digest = BlobDigest(
            hashUTF8: UnsafeBufferPointer(start: base, count: 64), sizeBytes: size)
        else { return }
        base.withMemoryRebound(to: CChar.self, capacity: end + 1) { cName in
          var st = stat()
          guard fstatat(fd, cName, &st, AT_SYMLINK_NOFOLLOW) == 0, st.st_mode & S_IFMT == S_IFREG
          else { return }
          let fileSize = Int64(st.st_size)
          let whole =
            switch layout {
            case .plain: fileSize == size
            case .sealed, .zstd:
              hasValidTrailer(layout, directory: fd, name: cName, fileSize: fileSize)
            }
          guard whole else {
            damaged.append(String(cString: cName))
            return
          }
          found.append(
            Entry(digest: digest, layout: layout, fileSize: fileSize, mtime: st.st_mtim.tv_sec))
        }
      }
    }
  }

  private static func hasValidTrailer(
    _ layout: EntryLayout, directory: Int32, name: UnsafePointer<CChar>, fileSize: Int64
  ) -> Bool {
    let count = layout == .zstd ? ZstdEntryTrailer.byteCount : EntryTrailer.byteCount
    guard fileSize >= count else { return false }
    let fd = openat(directory, name, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    guard let tail = try? FileCalls.read(fd, count: count, at: fileSize - Int64(count)) else {
      return false
    }
    return layout == .zstd
      ? ZstdEntryTrailer(tail, fileSize: fileSize) != nil : EntryTrailer(tail, fileSize: fileSize) != nil
  }
}

private func makeDirectory(_ path: String) throws {
  if mkdir(path, 0o755) != 0 {
    let e = errno
    if e != EEXIST { throw StoreError(.internal, "mkdir \(path): \(String(cString: strerror(e)))") }
  }
}

/// `mkdir -p`.
private func makeDirectories(_ path: String) throws {
  if let failed = POSIXPaths.makeDirectories(path) {
    throw StoreError(.internal, "mkdir \(failed): \(POSIXPaths.errorText)")
  }
}
