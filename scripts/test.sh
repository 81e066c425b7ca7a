#!/usr/bin/env bash
# Sets up and runs every test: Swift unit tests (codec cross-checked with protoc), fuzz smoke
# runs, interop tests with grpcio and real Bazel against a running apus, and the benchmark
# suite's smoke mode (every scenario once at tiny sizes; figures are not asserted).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test

swift build --build-tests
.venv/bin/python scripts/reapi-descriptors.py .build/reapi-descriptors.bin
APUS_REAPI_DESCRIPTORS="$PWD/.build/reapi-descriptors.bin" swift test --skip-build

Fuzz/run.sh --smoke

APUS_BIN="$PWD/.build/debug/apus" .venv/bin/python -m pytest -q tests

Benchmarks/run --smoke --apus .build/debug/apus --json .build/benchmarks-smoke.json \
  --markdown .build/benchmarks-smoke.md
