#!/usr/bin/env bash
# Soak test: mixed cache + execution load against a locally started apus for a set time,
# failing on any RPC error, RSS growth or fd growth. Not part of scripts/test.sh.
#
#   scripts/soak.sh                 30 minutes
#   scripts/soak.sh --minutes 3     a short run; other options: scripts/soak.sh --help
#
# apus (APUS_BIN, default .build/debug/apus) runs configs/default.json (cache, scheduler and
# one local worker) on a free loopback port, with HOME in a temp dir, the CAS and the worker's
# cache capped at 64 MiB and the action cache at 2 MiB so eviction is part of the load, and finished
# operations kept 60 s (not 600 s): the indexes and the operation table stop growing during
# the warm-up, and later growth means a leak. 4 grpcio client threads loop over FindMissingBlobs,
# BatchUpdateBlobs + BatchReadBlobs (≤ 64 KiB blobs), ByteStream Write + Read (16 B to
# 4 MiB, a fifth of them rewrites of existing blobs), UpdateActionResult + GetActionResult,
# and Execute of a small shell action (then again, from the action cache). Every answer is
# checked. apus's VmRSS and open fds are sampled every 5 s. It fails (exit 1) when:
#   - any call fails or returns a wrong answer;
#   - RSS at the end > 1.5x RSS after the warm-up (2 min, or half the run if shorter) and
#     more than 32 MiB above it, or RSS ever > 1024 MiB;
#   - open fds at the end > fds after the warm-up + 32;
#   - apus does not exit 0 on SIGTERM.
# It prints a summary: RPCs by method, errors by operation, RSS and fds at
# start/warm-up/end/max; it keeps the temp dir (with apus.log) when it fails.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x .venv/bin/python ]] || scripts/setup.sh --test
apus=${APUS_BIN:-$PWD/.build/debug/apus}
[[ -x "$apus" ]] || swift build
exec .venv/bin/python scripts/soak.py --apus "$apus" "$@"
