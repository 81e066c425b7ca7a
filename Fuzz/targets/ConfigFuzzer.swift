import Foundation

// libFuzzer target: the config loader (JSON5 parsing, env expansion, validation) on
// arbitrary bytes. Any input must give a configuration or a ConfigError, never a crash.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConfig(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
  let bytes = Data(bytes: data, count: size)
  do {
    _ = try ApusConfiguration.parse(bytes, environment: ["HOME": "/h", "PORT": "1"])
  } catch {
    precondition(!error.description.isEmpty)
  }
  let text = String(decoding: bytes, as: UTF8.self)
  _ = EnvironmentExpansion(variables: ["A": "x"]).expand(text)
  return 0
}
