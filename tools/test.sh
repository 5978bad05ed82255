#!/usr/bin/env bash
# Fresh machine -> all tests: installs dependencies, builds (Release) and runs every test with ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/env.sh
tools/install_deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DMOAS_BUILD_TESTS=ON
cmake --build build -j "$(nproc)"
ctest --test-dir build --output-on-failure -j "$(nproc)"
