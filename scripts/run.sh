#!/usr/bin/env bash
# Sets up, builds (release) and runs apus. No argument: the built-in default, a cache on
# 127.0.0.1:50051 with its data under ~/.cache/apus. Any arguments go to apus.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
swift build -c release --product apus
exec .build/release/apus "$@"
