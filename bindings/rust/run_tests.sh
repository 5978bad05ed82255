#!/usr/bin/env bash
# Builds and tests the Rust bindings against an existing libmoas build, then runs the two training examples.
#   bindings/rust/run_tests.sh [BUILD_DIR]      (default: the repository's build/)
# Cargo's output goes to BUILD_DIR/rust-target so the source tree stays clean. Offline: the crates use std only.
# moas-sys links BUILD_DIR/libmoas.a when it is there, else libmoas.so; MOAS_LINK=static|dylib chooses (README).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
build_dir="${1:-$here/../../build}"
if [ ! -d "$build_dir" ]; then
  echo "run_tests.sh: build directory $build_dir does not exist: build libmoas with CMake first" >&2
  exit 2
fi
build_dir="$(cd "$build_dir" && pwd)"
if [ ! -f "$build_dir/libmoas.a" ] && ! compgen -G "$build_dir/libmoas.so*" >/dev/null; then
  echo "run_tests.sh: no libmoas.a or libmoas.so in $build_dir: build the moas_static or moas target first" >&2
  exit 2
fi

export MOAS_LIB_DIR="$build_dir"
export MOAS_INCLUDE_DIR="${MOAS_INCLUDE_DIR:-$here/../../include}"
export CARGO_TARGET_DIR="$build_dir/rust-target"
export OPENBLAS_CORETYPE="${OPENBLAS_CORETYPE:-Haswell}"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"

cd "$here"
cargo test --offline --locked
cargo run --offline --locked --release --example train_rustgpt
# The example exits non-zero when its loss does not fall clearly; the grep also catches a run that ends early.
cargo run --offline --locked --release --example rustgpt_layer | tee "$CARGO_TARGET_DIR/rustgpt_layer.log"
grep -q "^loss fell from" "$CARGO_TARGET_DIR/rustgpt_layer.log"
