#!/usr/bin/env bash
# Installs the Debian packages libmoas builds and tests with (idempotent; needs root or sudo). With --fuzz, also clang
# with libFuzzer and its OpenMP runtime, for fuzz/run.sh.
set -euo pipefail
packages=(build-essential cmake pkg-config libopenblas-openmp-dev libopenblas-dev catch2 libbenchmark-dev
          nlohmann-json3-dev libdnnl-dev python3-venv)
if [ "${1:-}" = "--fuzz" ]; then packages+=(clang libclang-rt-dev libomp-dev); fi
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}"
fi
