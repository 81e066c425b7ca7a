/// The `authorization: Bearer …` header a client sends, from a token file.
public enum BearerToken {
  /// Reads the token from `path` (surrounding whitespace dropped). The token itself never
  /// appears in the error.
  public static func metadata(fromFile path: String) throws -> [(String, String)] {
    guard let file = SmallFile.read(path, maxBytes: 64 * 1024) else {
      throw RPCError(.unauthenticated, "cannot read the token file \(path)")
    }
    let token = String(decoding: file.bytes, as: UTF8.self).trimmingWhitespace
    guard !token.isEmpty, !token.contains(where: \.isWhitespace) else {
      throw RPCError(.unauthenticated, "the token file \(path) does not hold one token")
    }
    return [("authorization", "Bearer \(token)")]
  }
}

extension String {
  var trimmingWhitespace: String {
    String(drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed())
  }
}
