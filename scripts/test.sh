#!/usr/bin/env bash
# Sets up and runs every test: Swift unit tests (codec cross-checked with protoc), fuzz smoke
# runs, interop tests with grpcio, real Bazel, Prometheus and Chromium against a running apus,
# and the benchmark suite's smoke mode (every scenario once at tiny sizes; figures are not
# asserted). This is what CI runs.
#
# --fast: the core only, for the edit-test loop: Swift tests, fuzz smoke, and the pytest
# files that need neither Bazel, a browser, Prometheus nor long S3 outages; no benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
fast=false
[[ "${1:-}" == "--fast" ]] && fast=true
scripts/setup.sh --test

swift build --build-tests
.venv/bin/python scripts/reapi-descriptors.py .build/reapi-descriptors.bin
# The scheduler's PostgreSQL state is tested against a real server (tests/postgres.py):
# started here for the Swift tests, stopped by PID when this script ends.
pgdir="$(mktemp -d)"
trap '.venv/bin/python tests/postgres.py stop "$pgdir"; rm -rf "$pgdir"' EXIT
APUS_TEST_POSTGRES_URL="$(.venv/bin/python tests/postgres.py start "$pgdir")"
export APUS_TEST_POSTGRES_URL
APUS_REAPI_DESCRIPTORS="$PWD/.build/reapi-descriptors.bin" swift test --skip-build

Fuzz/run.sh --smoke

heavy=()
if $fast; then
  for f in tests/test_bazel_*.py tests/test_s3_outage.py tests/test_prometheus.py tests/test_status_page.py; do
    heavy+=(--ignore "$f")
  done
fi
APUS_BIN="$PWD/.build/debug/apus" .venv/bin/python -m pytest -q tests "${heavy[@]}"
# The execution tests again, with the scheduler's state in PostgreSQL (lease 3 s).
APUS_TEST_SCHEDULER_STATE="{\"postgres\": {\"url\": \"$APUS_TEST_POSTGRES_URL\", \"lease_seconds\": 3, \"poll_interval_milliseconds\": 500}}" \
  APUS_BIN="$PWD/.build/debug/apus" .venv/bin/python -m pytest -q tests/test_execution_interop.py

$fast && exit 0
Benchmarks/run --smoke --apus .build/debug/apus --json .build/benchmarks-smoke.json \
  --markdown .build/benchmarks-smoke.md
