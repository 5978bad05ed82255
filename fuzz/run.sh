#!/usr/bin/env bash
# Fuzzes libmoas's file readers with libFuzzer: fuzz/run.sh [SECONDS_PER_TARGET] [BUILD_DIR]
# Configures a clang build with the sanitizers and MOAS_FUZZ in BUILD_DIR (default build-fuzz; CPU only, no tests, no
# bench, no oneDNN: its OpenMP runtime is GCC's), builds the four fuzzers and runs each for SECONDS (default 60) from a
# copy of its seed corpus, fuzz/corpus/<target>/; what they add stays in BUILD_DIR/fuzz-corpus/<target>/. A crash, a
# sanitizer report, a leak, an input slower than 10 s or a process past 2 GiB fails: the input is kept in
# BUILD_DIR/fuzz-artifacts/ (replay it with BUILD_DIR/fuzz/moas_fuzz_<target> FILE) and this script exits 1.
# The seed corpora are regenerated with BUILD_DIR/fuzz/moas_fuzz_corpus fuzz/corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/env.sh
seconds="${1:-60}"
build="${2:-build-fuzz}"
targets=(checkpoint optimizer config_json cli_config)

tools/install_deps.sh --fuzz
for tool in clang clang++; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "fuzz/run.sh: $tool not found (Debian: apt-get install clang libclang-rt-dev libomp-dev)" >&2
    exit 2
  fi
done
if [ ! -e "$(clang -print-resource-dir)/lib/linux/libclang_rt.fuzzer-$(uname -m).a" ]; then
  echo "fuzz/run.sh: clang has no libFuzzer (Debian: apt-get install libclang-rt-dev)" >&2
  exit 2
fi

cmake -S . -B "$build" -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DMOAS_FUZZ=ON -DMOAS_SANITIZE=ON -DMOAS_CUDA=OFF -DMOAS_DNNL=OFF -DMOAS_BUILD_TESTS=OFF -DMOAS_BUILD_BENCH=OFF
cmake --build "$build" -j "$(nproc)" --target "${targets[@]/#/moas_fuzz_}"

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive
mkdir -p "$build/fuzz-artifacts" "$build/fuzz-logs"
failed=()
for target in "${targets[@]}"; do
  corpus="$build/fuzz-corpus/$target"
  mkdir -p "$corpus"
  cp fuzz/corpus/"$target"/* "$corpus"/
  log="$build/fuzz-logs/$target.log"
  echo "== fuzz $target: ${seconds} s from $(ls fuzz/corpus/"$target" | wc -l) seeds =="
  if "$build/fuzz/moas_fuzz_$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
       -print_final_stats=1 -artifact_prefix="$build/fuzz-artifacts/$target-" "$corpus" >"$log" 2>&1; then
    # The last progress line: executions, coverage (cov: edges, ft: features), corpus size, exec/s.
    grep -E "^#[0-9]+" "$log" | tail -1
    grep -E "^stat::number_of_executed_units|^stat::average_exec_per_sec|^stat::peak_rss_mb" "$log" || true
  else
    echo "FAILED: fuzz $target; its log ($log) ends:"
    tail -40 "$log"
    failed+=("$target")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing found failures in: ${failed[*]} (inputs in $build/fuzz-artifacts/)"
  exit 1
fi
echo "fuzzing: ${#targets[@]} targets, ${seconds} s each, no failure"
