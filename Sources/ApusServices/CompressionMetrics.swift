import CoreMetrics

/// Bytes through REAPI compression (ByteStream `compressed-blobs` and compressed batch
/// blobs), compressed and uncompressed, so operators see what compression saves on the wire.
/// Uploads count the uncompressed bytes as they are decoded, refused uploads included (a
/// refused decompression bomb shows as at most its digest's size).
enum CompressionMetrics {
  static let uploadCompressed = counter("upload", "compressed")
  static let uploadUncompressed = counter("upload", "uncompressed")
  static let downloadCompressed = counter("download", "compressed")
  static let downloadUncompressed = counter("download", "uncompressed")

  private static func counter(_ direction: String, _ form: String) -> Counter {
    Counter(
      label: "apus_compression_bytes_total",
      dimensions: [("compressor", "zstd"), ("direction", direction), ("form", form)])
  }
}
