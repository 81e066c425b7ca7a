import ApusProto
import ApusStore
import NIOPosix

#if canImport(Glibc)
  import Glibc
#endif

/// Lays out an action's input root in a fresh directory: files hard-linked from the local
/// cache (read-only, so an action cannot corrupt it), executables copied with mode 0555,
/// symlinks as given. A worker running as root copies every file instead: permissions do
/// not stop root, and a write through a hard link would corrupt the cache. Blobs missing from the local cache are fetched from the remote CAS
/// first; blobs missing there too are reported as MISSING.
struct InputMaterializer: Sendable {
  let remote: any BlobStore
  let cache: FilesystemStore
  let pool: NIOThreadPool
  /// Where fetched bytes and cache hits are counted.
  var metrics: WorkerMetrics? = nil
  static let maxDirectoryBytes = 4 << 20
  static let hardLinks = geteuid() != 0

  struct Layout {
    var directories: [String] = []
    var files: [(path: String, digest: BlobDigest, executable: Bool)] = []
    var symlinks: [(path: String, target: String)] = []
  }

  func materialize(root: BlobDigest, into directory: String) async throws {
    let layout = try await walk(root)
    try await fetchMissing(Array(Set(layout.files.map(\.digest))))
    let cache = self.cache
    try await pool.runIfActive {
      for dir in layout.directories {
        guard mkdir("\(directory)/\(dir)", 0o755) == 0 || errno == EEXIST else {
          throw ExecutionFailure(.internal, "mkdir \(dir): \(FileIO.errorText())")
        }
      }
      for file in layout.files {
        let target = "\(directory)/\(file.path)"
        if file.digest.isEmpty {
          let fd = open(target, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, file.executable ? 0o555 : 0o444)
          guard fd >= 0 else { throw ExecutionFailure(.internal, "create \(file.path): \(FileIO.errorText())") }
          close(fd)
        } else if file.executable || !Self.hardLinks || link(cache.path(file.digest), target) != 0 {
          try FileIO.copy(cache.path(file.digest), to: target, mode: file.executable ? 0o555 : 0o444)
        }
      }
      for s in layout.symlinks {
        guard symlink(s.target, "\(directory)/\(s.path)") == 0 else {
          throw ExecutionFailure(.internal, "symlink \(s.path): \(FileIO.errorText())")
        }
      }
    }
  }

  /// Reads the Directory tree breadth-first, each level's distinct directories fetched
  /// concurrently. Names are checked so no entry can escape.
  func walk(_ root: BlobDigest) async throws -> Layout {
    var layout = Layout()
    var level: [(String, BlobDigest)] = [("", root)]
    var missing: [BlobDigest] = []
    while !level.isEmpty {
      let fetched = try await fetchDirectories(Set(level.map(\.1)))
      var next: [(String, BlobDigest)] = []
      for (prefix, digest) in level {
        guard let dir = fetched[digest] else {
          missing.append(digest)
          continue
        }
        func child(_ name: String) throws -> String {
          guard !name.isEmpty, name != ".", name != "..", !name.contains("/"), !name.contains("\0") else {
            throw ExecutionFailure(.invalidArgument, "invalid name \"\(name)\" in input directory \(digest)")
          }
          return prefix.isEmpty ? name : "\(prefix)/\(name)"
        }
        for f in dir.files {
          guard let d = f.digest?.validated else {
            throw ExecutionFailure(.invalidArgument, "file \(f.name) has an invalid digest")
          }
          layout.files.append((try child(f.name), d, f.isExecutable))
        }
        for s in dir.symlinks { layout.symlinks.append((try child(s.name), s.target)) }
        for d in dir.directories {
          guard let digest = d.digest?.validated else {
            throw ExecutionFailure(.invalidArgument, "directory \(d.name) has an invalid digest")
          }
          let path = try child(d.name)
          layout.directories.append(path)
          next.append((path, digest))
        }
      }
      level = next
    }
    if !missing.isEmpty {
      throw ExecutionFailure(status: .missingBlobs(Array(Set(missing)), "input directories are missing from the CAS"))
    }
    return layout
  }

  /// The decoded Directories that exist, up to 16 fetches at a time.
  private func fetchDirectories(_ digests: Set<BlobDigest>) async throws -> [BlobDigest: Directory] {
    let remote = self.remote, metrics = self.metrics
    return try await withThrowingTaskGroup(of: (BlobDigest, Directory?).self) { group in
      var pending = Array(digests)
      var out: [BlobDigest: Directory] = [:]
      func addOne() {
        let digest = pending.removeLast()
        group.addTask {
          if digest.isEmpty { return (digest, Directory()) }
          guard let bytes = try await remote.readAll(digest, maxBytes: Self.maxDirectoryBytes) else {
            return (digest, nil)
          }
          metrics?.inputFetchBytes.increment(by: bytes.count)
          do {
            return (digest, try Directory(serializedBytes: bytes))
          } catch {
            throw ExecutionFailure(.invalidArgument, "directory \(digest) is not a valid Directory")
          }
        }
      }
      for _ in 0..<min(16, pending.count) { addOne() }
      while let (digest, dir) = try await group.next() {
        if let dir { out[digest] = dir }
        if !pending.isEmpty { addOne() }
      }
      return out
    }
  }

  /// Brings blobs into the local cache, streaming each straight to disk.
  private func fetchMissing(_ digests: [BlobDigest]) async throws {
    let needed = digests.filter { !$0.isEmpty }
    let wanted = try await cache.findMissing(needed)
    if let metrics {
      metrics.inputCacheHits.increment(by: needed.count - wanted.count)
      metrics.inputCacheMisses.increment(by: wanted.count)
    }
    guard !wanted.isEmpty else { return }
    let absent = try await remote.findMissing(wanted)
    if !absent.isEmpty {
      throw ExecutionFailure(status: .missingBlobs(absent, "input files are missing from the CAS"))
    }
    let remote = self.remote, cache = self.cache
    try await withThrowingTaskGroup(of: Void.self) { group in
      var next = 0
      func addOne() {
        let d = wanted[next]
        next += 1
        group.addTask {
          try await cache.write(d) { sink in
            guard try await remote.read(d, offset: 0, limit: nil, into: sink) else {
              throw ExecutionFailure(status: .missingBlobs([d], "an input file vanished from the CAS"))
            }
          }
        }
      }
      for _ in 0..<min(8, wanted.count) { addOne() }
      while try await group.next() != nil {
        if next < wanted.count { addOne() }
      }
    }
    metrics?.inputFetchBytes.increment(by: wanted.reduce(Int64(0)) { $0 + $1.sizeBytes })
  }
}
