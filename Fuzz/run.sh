#!/usr/bin/env bash
# Builds the libFuzzer targets (swiftc -sanitize=fuzzer,address) and runs each one:
#   Fuzz/run.sh [SECONDS]       for a bounded time (default 60 s each)
#   Fuzz/run.sh --smoke         10 s each (the test command's run)
#   Fuzz/run.sh --long [RUNS]   a fixed number of inputs (default 10,000,000 each, libFuzzer
#                               -runs=), however long that takes; run it under `nice`
# Prints each target's executed-input count and findings (crash, leak, timeout, OOM); a
# finding fails the script and leaves the input in Fuzz/out/. The targets named in
# FUZZ_TARGETS (space-separated) run instead of all five.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=60
runs=""
case "${1:-}" in
  --smoke) seconds=10 ;;
  --long)
    runs=${2:-10000000}
    [[ "$runs" =~ ^[0-9]+$ ]] || { echo "usage: Fuzz/run.sh --long [RUNS]" >&2; exit 2; } ;;
  "") ;;
  *)
    [[ "$1" =~ ^[0-9]+$ ]] || { echo "usage: Fuzz/run.sh [SECONDS | --smoke | --long [RUNS]]" >&2; exit 2; }
    seconds=$1 ;;
esac

out=.build/fuzz
mkdir -p "$out" Fuzz/out
flags=(-sanitize=fuzzer,address -parse-as-library -O -g -swift-version 6)
proto=(Sources/ApusProto/*.swift Sources/ApusProto/Messages/*.swift)
rpc_pure=(Sources/ApusRPC/GRPCMessageDeframer.swift Sources/ApusRPC/RPCError.swift
  Sources/ApusProto/RPCStatusCode.swift Sources/ApusRPC/GRPCTimeout.swift
  Sources/ApusRPC/PercentEncoding.swift Sources/ApusRPC/Base64.swift)

# Each target is one module built from the sources it fuzzes; the module takes the name of
# the one they import (an import of the module being compiled is ignored).
build() {  # name, module, sources...
  local name=$1 module=$2; shift 2
  if [[ ! -x "$out/$name" ]] || [[ -n "$(find "$@" -newer "$out/$name" 2>/dev/null | head -1)" ]]; then
    if ! swiftc "${flags[@]}" -module-name "$module" "$@" -o "$out/$name" >"$out/$name.build.log" 2>&1; then
      grep -E "error" "$out/$name.build.log" | head -20
      echo "fuzz $name: build FAILED"
      exit 1
    fi
  fi
}

build proto ApusProto "${proto[@]}" Fuzz/targets/ProtoDecoderFuzzer.swift
build framing ApusRPC "${rpc_pure[@]}" Fuzz/targets/GRPCFramingFuzzer.swift
build resource ApusProto "${proto[@]}" Sources/ApusServices/ResourceName.swift Fuzz/targets/ResourceNameFuzzer.swift
build config ApusConfig Sources/ApusConfig/*.swift Fuzz/targets/ConfigFuzzer.swift
# The zstd upload path with libzstd and OpenSSL through the repository's module maps.
zstd_flags=(-I Sources/CZstd -I Sources/COpenSSL -lzstd -lcrypto)
flags+=("${zstd_flags[@]}")
build zstd ApusRPC Sources/ApusRPC/Zstd*.swift Sources/ApusRPC/RPCError.swift \
  Sources/ApusProto/RPCStatusCode.swift Fuzz/targets/ZstdUploadFuzzer.swift

status=0
for target in ${FUZZ_TARGETS:-proto framing resource config zstd}; do
  corpus=$(mktemp -d)
  cp Fuzz/corpus/"$target"/* "$corpus"/ 2>/dev/null || true
  log=$(mktemp)
  if [[ -n "$runs" ]]; then limit=(-runs="$runs"); else limit=(-max_total_time="$seconds"); fi
  start=$SECONDS
  if "$out/$target" "${limit[@]}" -max_len=4096 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="Fuzz/out/$target-" "$corpus" >"$log" 2>&1; then
    executed=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' || echo "?")
    echo "fuzz $target: $executed inputs in $((SECONDS - start))s, 0 findings"
  else
    executed=$(grep -Eo '#[0-9]+' "$log" | tail -1 | tr -d '#' || true)
    echo "fuzz $target: FAILED after ${executed:-?} inputs in $((SECONDS - start))s, 1 finding:"
    grep -E "ERROR: libFuzzer|ERROR: AddressSanitizer|ERROR: LeakSanitizer|Test unit written to" "$log" || true
    tail -40 "$log"; status=1
  fi
  rm -rf "$corpus" "$log"
done
exit $status
