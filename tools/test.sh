#!/usr/bin/env bash
# Fresh machine -> all tests: installs dependencies, builds (Release), runs every C++ test, example and CLI test with
# ctest, then the Python (pytest, numpy reference) and Rust (cargo test, offline) binding suites against that build.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/env.sh
tools/install_deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DMOAS_BUILD_TESTS=ON
cmake --build build -j "$(nproc)"
ctest --test-dir build --output-on-failure -j "$(nproc)"

echo "== Python bindings =="
bindings/python/run_tests.sh build
echo "== Rust bindings =="
if command -v cargo >/dev/null 2>&1; then
  bindings/rust/run_tests.sh build
else
  echo "SKIPPED: Rust bindings (cargo not found; install a Rust toolchain >= 1.77 to run them)"
fi
