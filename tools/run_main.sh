#!/usr/bin/env bash
# Fresh machine -> the main job: installs dependencies, builds, and runs `moas compare` on the embedded recall/copy
# task: MHA, GQA, MQA, static/soft/top-1 MoAS and MoH trained on the same data, seed and budget (about three
# minutes on 2 cores), ending with a table and runs/compare/compare.svg. Extra arguments go to `moas compare`.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/env.sh
tools/install_deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$(nproc)" --target moas_cli
exec build/apps/moas/moas compare "$@"
