import ApusProto
import ApusStore
import NIOPosix

#if canImport(Glibc)
  import Glibc
#endif

/// Turns what a command left in its output paths into ActionResult entries, and uploads
/// the files (and Tree blobs) the CAS does not have yet.
struct OutputCollector: Sendable {
  let remote: any BlobStore
  let pool: NIOThreadPool
  /// Where uploaded bytes are counted.
  var metrics: WorkerMetrics? = nil

  enum Declared { case file, directory, either }

  /// Blobs to upload: digest → file on disk, or bytes already in memory.
  struct Uploads {
    var files: [BlobDigest: String] = [:]
    var blobs: [BlobDigest: [UInt8]] = [:]
  }

  func collect(
    command: Command, workingDirectory: String, into result: inout ActionResult, uploads: inout Uploads
  ) async throws {
    var declared: [(String, Declared)]
    if !command.outputPaths.isEmpty {
      declared = command.outputPaths.map { ($0, .either) }
    } else {
      declared = command.outputFiles.map { ($0, .file) } + command.outputDirectories.map { ($0, .directory) }
    }
    for (path, kind) in declared {
      try Self.checkRelative(path)
      let full = "\(workingDirectory)/\(path)"
      var st = stat()
      guard lstat(full, &st) == 0 else { continue }  // not produced: the client decides
      switch st.st_mode & S_IFMT {
      case S_IFLNK:
        var link = OutputSymlink()
        link.path = path
        link.target = try FileIO.readLink(full)
        switch kind {
        case .either: result.outputSymlinks.append(link)
        case .file: result.outputFileSymlinks.append(link)
        case .directory: result.outputDirectorySymlinks.append(link)
        }
      case S_IFREG:
        guard kind != .directory else {
          throw ExecutionFailure(.failedPrecondition, "output directory \(path) is a regular file")
        }
        let digest = try await hashForUpload(full, &uploads)
        var file = OutputFile()
        file.path = path
        file.digest = digest.proto
        file.isExecutable = st.st_mode & 0o111 != 0
        result.outputFiles.append(file)
      case S_IFDIR:
        guard kind != .file else {
          throw ExecutionFailure(.failedPrecondition, "output file \(path) is a directory")
        }
        var children: [Directory] = []
        var seen: Set<BlobDigest> = []
        let root = try await directory(full, &children, &seen, &uploads)
        var tree = Tree()
        tree.root = root
        tree.children = children
        let treeBytes = tree.serializedBytes()
        let treeDigest = SHA256Hasher.digest(of: treeBytes)
        uploads.blobs[treeDigest] = treeBytes
        var out = OutputDirectory()
        out.path = path
        out.treeDigest = treeDigest.proto
        out.rootDirectoryDigest = SHA256Hasher.digest(of: root.serializedBytes()).proto
        result.outputDirectories.append(out)
      default:
        throw ExecutionFailure(.failedPrecondition, "output \(path) is neither a file, a directory nor a symlink")
      }
    }
  }

  /// Builds the Directory for `path`, adding every distinct subdirectory to `children`.
  private func directory(
    _ path: String, _ children: inout [Directory], _ seen: inout Set<BlobDigest>, _ uploads: inout Uploads
  ) async throws -> Directory {
    var dir = Directory()
    for name in try FileIO.listDirectory(path) {
      let full = "\(path)/\(name)"
      var st = stat()
      guard lstat(full, &st) == 0 else { continue }
      switch st.st_mode & S_IFMT {
      case S_IFREG:
        let digest = try await hashForUpload(full, &uploads)
        var node = FileNode()
        node.name = name
        node.digest = digest.proto
        node.isExecutable = st.st_mode & 0o111 != 0
        dir.files.append(node)
      case S_IFDIR:
        let child = try await directory(full, &children, &seen, &uploads)
        let bytes = child.serializedBytes()
        let digest = SHA256Hasher.digest(of: bytes)
        if seen.insert(digest).inserted {
          children.append(child)
          uploads.blobs[digest] = bytes
        }
        var node = DirectoryNode()
        node.name = name
        node.digest = digest.proto
        dir.directories.append(node)
      case S_IFLNK:
        var node = SymlinkNode()
        node.name = name
        node.target = try FileIO.readLink(full)
        dir.symlinks.append(node)
      default:
        continue
      }
    }
    return dir
  }

  /// Hashes a file (on the pool) and remembers it for upload.
  func hashForUpload(_ path: String, _ uploads: inout Uploads) async throws -> BlobDigest {
    let digest = try await pool.runIfActive { try FileIO.digest(ofFile: path) }
    uploads.files[digest] = path
    return digest
  }

  /// Uploads what the remote CAS is missing.
  func upload(_ uploads: Uploads) async throws {
    let all = Array(uploads.files.keys) + Array(uploads.blobs.keys)
    let missing = try await remote.findMissing(all.filter { !$0.isEmpty })
    let remote = self.remote, pool = self.pool
    try await withThrowingTaskGroup(of: Void.self) { group in
      for d in missing {
        if let bytes = uploads.blobs[d] {
          group.addTask { try await remote.writeAll(d, bytes) }
        } else if let path = uploads.files[d] {
          group.addTask { try await remote.write(d, from: FileChunks(path: path, pool: pool)) }
        }
      }
      try await group.waitForAll()
    }
    metrics?.outputUploadBytes.increment(by: missing.reduce(Int64(0)) { $0 + $1.sizeBytes })
  }

  /// Output paths are relative and stay inside the working directory.
  static func checkRelative(_ path: String) throws {
    guard !path.isEmpty, !path.hasPrefix("/"),
      !path.split(separator: "/", omittingEmptySubsequences: false).contains(where: { $0 == ".." })
    else {
      throw ExecutionFailure(.invalidArgument, "output path \"\(path)\" escapes the working directory")
    }
  }
}
