#!/usr/bin/env bash
# Builds the libFuzzer targets (swiftc -sanitize=fuzzer,address) and runs each for a
# bounded time: `Fuzz/run.sh [SECONDS]` (default 60 each), `--smoke` for 10 s each.
# Prints each target's executed-input count; a crash fails the script and leaves the
# crashing input in Fuzz/out/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=60
[[ "${1:-}" == "--smoke" ]] && seconds=10
[[ "${1:-}" =~ ^[0-9]+$ ]] && seconds=$1

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

status=0
for target in proto framing resource config; do
  corpus=$(mktemp -d)
  cp Fuzz/corpus/"$target"/* "$corpus"/ 2>/dev/null || true
  log=$(mktemp)
  if "$out/$target" -max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="Fuzz/out/$target-" "$corpus" >"$log" 2>&1; then
    runs=$(grep -Eo 'Done [0-9]+ runs' "$log" | grep -Eo '[0-9]+' || echo "?")
    echo "fuzz $target: $runs inputs in ${seconds}s, no crash"
  else
    echo "fuzz $target: FAILED"; tail -40 "$log"; status=1
  fi
  rm -rf "$corpus" "$log"
done
exit $status
