#!/usr/bin/env bash
# Fresh machine -> all tests: installs dependencies, builds (Release), runs every C++ test, example and CLI test with
# ctest, then the Python (pytest, numpy reference) and Rust (cargo test, offline) binding suites against that build.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/env.sh
tools/install_deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DMOAS_BUILD_TESTS=ON
cmake --build build -j "$(nproc)"
# One test at a time: each already runs on every core, and two at once spend their time waiting for each other's
# threads (a whole run took 54 s with -j2, 10 s with -j1 on 2 cores).
ctest --test-dir build --output-on-failure -j1

echo "== Python bindings =="
bindings/python/run_tests.sh build
echo "== Rust bindings =="
if command -v cargo >/dev/null 2>&1; then
  bindings/rust/run_tests.sh build
else
  echo "SKIPPED: Rust bindings (cargo not found; install a Rust toolchain >= 1.77 to run them)"
fi
