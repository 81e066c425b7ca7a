#!/usr/bin/env bash
# Installs what building Apus needs on Debian 12 (and, with --test, what its tests need):
# apt packages, then a Python venv in .venv with the interop-test packages.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(pkg-config libnghttp2-dev libssl-dev zlib1g-dev libzstd-dev)
if [[ "${1:-}" == "--test" ]]; then
  packages+=(protobuf-compiler bazel-bootstrap libnetty-tcnative-jni python3-venv nghttp2-client nghttp2-server openssl prometheus chromium chromium-driver docker-compose shellcheck yamllint postgresql haproxy)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [[ "$(id -u)" == 0 ]] || sudo="sudo"
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [[ "${1:-}" == "--test" ]]; then
  # pip, not python: a venv whose creation was interrupted has python and no pip.
  if [[ ! -x .venv/bin/pip ]]; then
    python3 -m venv .venv
  fi
  stamp=.venv/.requirements
  if ! cmp -s tests/requirements.txt "$stamp"; then
    .venv/bin/pip install -q --disable-pip-version-check -r tests/requirements.txt
    cp tests/requirements.txt "$stamp"
  fi
  # checkov and python-hcl2 for the Terraform checks, apart from the interop-test packages.
  if [[ ! -x .venv-deploy/bin/pip ]]; then
    python3 -m venv .venv-deploy
  fi
  stamp=.venv-deploy/.requirements
  if ! cmp -s deployment-examples/requirements.txt "$stamp"; then
    .venv-deploy/bin/pip install -q --disable-pip-version-check -r deployment-examples/requirements.txt
    cp deployment-examples/requirements.txt "$stamp"
  fi
fi
