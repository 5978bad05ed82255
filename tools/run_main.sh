#!/usr/bin/env bash
# Fresh machine -> the main job: installs dependencies, builds, and trains a small GPT through the C ABI, printing
# the falling loss. Uses ../shared/data/tinyshakespeare.txt when it exists, else a built-in paragraph.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/env.sh
tools/install_deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$(nproc)" --target train_tiny
data=../shared/data/tinyshakespeare.txt
if [ -f "$data" ]; then
  exec build/examples/train_tiny --data "$data" --steps "${STEPS:-300}" "$@"
fi
exec build/examples/train_tiny --steps "${STEPS:-300}" "$@"
