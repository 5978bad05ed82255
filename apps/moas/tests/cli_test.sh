#!/usr/bin/env bash
# End-to-end checks of the moas command line, one case per ctest test.
# Usage: cli_test.sh CASE MOAS_BINARY WORK_DIR SHAKESPEARE_FILE
# Exit 0: passed; 77: skipped (ctest SKIP_RETURN_CODE); anything else: failed, with the reason on stderr.
set -euo pipefail
case_name=$1
moas=$2
work=$3
shakespeare=$4
rm -rf "$work"
mkdir -p "$work"
cd "$work"

tiny=(--layers 1 --heads 4 --width 32 --block 32 --batch 4)

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# The "done:" line's "train loss A -> B": succeeds when B < A.
loss_fell() {
  grep '^done:' "$1" | sed 's/.*train loss \([0-9.]*\) -> \([0-9.]*\).*/\1 \2/' | awk '{ exit !($2 < $1) }'
}

# The training entry of one step in a metrics.jsonl, without its timing.
train_entry() {
  grep "^{\"step\":$2,\"lr\"" "$1" | sed 's/,"tokens_per_s":[^,}]*//'
}

case "$case_name" in
train)
  "$moas" train "${tiny[@]}" --steps 20 --log-every 1 --out run >out.txt
  for f in model.safetensors model.optim.safetensors metrics.jsonl; do
    [ -s "run/$f" ] || fail "run/$f was not written"
  done
  [ "$(grep -c '"train_loss"' run/metrics.jsonl)" -eq 20 ] || fail "metrics.jsonl should hold 20 training entries"
  grep -q '"val_loss"' run/metrics.jsonl || fail "metrics.jsonl has no validation entry"
  grep -q 'threads' out.txt || fail "the thread count was not printed"
  loss_fell out.txt || fail "the training loss did not fall: $(grep '^done:' out.txt)"
  ;;
resume)
  # 20 steps straight, and 10 steps then a resumption to 20, with dropout on: the same losses and weights.
  common=("${tiny[@]}" --steps 20 --dropout 0.1 --log-every 1)
  "$moas" train "${common[@]}" --out straight >/dev/null
  "$moas" train "${common[@]}" --stop-at 10 --out split >/dev/null
  grep -q '"step":10,"lr"' split/metrics.jsonl || fail "the first half did not reach step 10"
  "$moas" train --resume --out split >resumed.txt
  grep -q 'resuming split/model.safetensors at step 10' resumed.txt || fail "the resumption did not start at step 10"
  expected=$(train_entry straight/metrics.jsonl 20)
  actual=$(train_entry split/metrics.jsonl 20)
  [ -n "$expected" ] && [ "$expected" = "$actual" ] || fail "step 20 differs: straight $expected, resumed $actual"
  cmp -s straight/model.safetensors split/model.safetensors || fail "the resumed weights differ from the straight run's"
  cmp -s straight/model.optim.safetensors split/model.optim.safetensors || fail "the optimizer states differ"
  ;;
generate)
  "$moas" train "${tiny[@]}" --steps 10 --out run >/dev/null
  "$moas" generate --checkpoint run/model.safetensors --tokens 80 --seed 3 >text.txt 2>err.txt
  [ "$(wc -c <text.txt)" -gt 40 ] || fail "generate printed too little text: $(cat text.txt)"
  grep -q 'bytes per token' err.txt || fail "no bytes-per-token line: $(cat err.txt)"
  grep -q 'tokens/s' err.txt || fail "no tokens/s figure: $(cat err.txt)"
  # The same seed samples the same text; the cache is refilled (80 tokens > block 32) along the way.
  "$moas" generate --checkpoint run --tokens 80 --seed 3 >again.txt 2>/dev/null
  cmp -s text.txt again.txt || fail "the same --seed sampled different text"
  grep -q 'refilled [1-9]' err.txt || fail "the cache was never refilled: $(cat err.txt)"
  # CoPE and a sliding window travel through the checkpoint into decoding.
  "$moas" train "${tiny[@]}" --steps 4 --position cope --cope-max-pos 8 --window 6 --out cope >cope.txt
  grep -q 'CoPE (8 positions), window 6' cope.txt || fail "the CoPE model was not described: $(grep '^model' cope.txt)"
  "$moas" generate --checkpoint cope --tokens 40 --seed 3 >cope_text.txt 2>/dev/null || fail "generate with CoPE"
  [ "$(wc -c <cope_text.txt)" -gt 20 ] || fail "generate with CoPE printed too little text"
  ;;
compare)
  "$moas" compare "${tiny[@]}" --steps 10 --eval-batches 2 --out cmp >out.txt
  grep -q '^| variant | val loss | parameters | tokens/s | KV bytes/token |' out.txt || fail "no table header"
  for v in mha gqa mqa moas-static moas-soft moas-top1 moh; do
    grep -q "^| $v | [0-9]" out.txt || fail "the table has no row for $v"
  done
  [ -s cmp/compare.svg ] && grep -q '</svg>' cmp/compare.svg || fail "cmp/compare.svg is missing or incomplete"
  grep -q '<polyline' cmp/compare.svg || fail "compare.svg has no loss curves"
  [ -s cmp/compare.json ] || fail "cmp/compare.json was not written"
  ;;
bad_input)
  : >empty.txt
  printf 'too short for any context' >short.txt
  printf '\xff\xfe not UTF-8' >binary.txt
  printf '{"layers": ' >broken.json
  "$moas" train "${tiny[@]}" --steps 4 --out good >/dev/null
  # expected exit code | arguments (each case writes into ./bad, which must not appear)
  cases=(
    "2|"
    "2|frobnicate"
    "1|train --data missing.txt --out bad"
    "1|train --data empty.txt --out bad"
    "1|train --data short.txt --out bad"
    "1|train --data binary.txt --out bad"
    "2|train --no-such-flag 1 --out bad"
    "2|train --lr fast --out bad"
    "2|train --layers 0 --out bad"
    "2|train --steps --out bad"
    "2|train --attention sideways --out bad"
    "2|train --position cope --cope-max-pos 0 --out bad"
    "2|train --window -1 --out bad"
    "2|train --device tpu --out bad"
    "2|train --matmul-precision fp16 --out bad"
    "2|train --width 30 --heads 4 --out bad"
    "2|train --config broken.json --out bad"
    "2|compare --attention moas --out bad"
    "2|train --resume --out good --layers 2"
    "2|train --out good"
    "1|train --resume --out bad"
    "2|generate --checkpoint good --prompt ABC"
    "1|generate --checkpoint missing.safetensors"
    "1|generate --checkpoint empty.txt"
    "2|generate --checkpoint good --device tpu"
  )
  before=$(cksum good/model.safetensors)
  for entry in "${cases[@]}"; do
    code=${entry%%|*}
    read -r -a args <<<"${entry#*|}"
    set +e
    "$moas" "${args[@]}" >/dev/null 2>err.txt
    status=$?
    set -e
    [ "$status" -eq "$code" ] || fail "moas ${args[*]}: exit $status, expected $code ($(cat err.txt))"
    [ "$(wc -l <err.txt)" -eq 1 ] || fail "moas ${args[*]}: the message is not one line: $(cat err.txt)"
    grep -q '^moas: ' err.txt || fail "moas ${args[*]}: unexpected message: $(cat err.txt)"
    [ ! -e bad ] || fail "moas ${args[*]} left ./bad behind"
  done
  [ "$before" = "$(cksum good/model.safetensors)" ] || fail "a refused resumption changed the checkpoint"
  [ -z "$(ls good | grep -v -x -e model.safetensors -e model.optim.safetensors -e metrics.jsonl)" ] ||
    fail "stray files in good/: $(ls good)"
  ;;
cuda_table)
  # --device cuda where no GPU exists: MOAS_CUDA_LIBRARY names the test build's table of CPU functions, so the CUDA
  # model's orchestration runs under the CLI and must give the CPU run's losses, step for step, and its text.
  if [ ! -f "${MOAS_CUDA_LIBRARY:-}" ]; then
    echo "skipped: no CPU-function table (build with MOAS_BUILD_TESTS)"
    exit 77
  fi
  common=("${tiny[@]}" --steps 6 --dropout 0.1 --log-every 1 --eval-every 3)
  "$moas" train "${common[@]}" --out cpu >/dev/null
  "$moas" train "${common[@]}" --device cuda --out gpu >gpu.txt
  grep -q 'training on CUDA device 0, fp32 products' gpu.txt || fail "no device line: $(head -1 gpu.txt)"
  losses() { sed 's/,"tokens_per_s":[^,}]*//' "$1/metrics.jsonl"; }
  [ "$(losses cpu)" = "$(losses gpu)" ] || fail "the CUDA run's losses differ from the CPU run's"
  "$moas" generate --checkpoint cpu --tokens 40 --seed 3 >cpu_text.txt 2>/dev/null
  "$moas" generate --checkpoint gpu --device cuda --tokens 40 --seed 3 >gpu_text.txt 2>/dev/null
  cmp -s cpu_text.txt gpu_text.txt || fail "decoding on the device sampled other text"
  # BF16 products (the table rounds their inputs as tensor cores do): the run still trains, with other losses.
  "$moas" train "${common[@]}" --device cuda --matmul-precision bf16 --out bf16 >bf16.txt
  grep -q 'CUDA device 0, bf16 products' bf16.txt || fail "no bf16 device line: $(head -1 bf16.txt)"
  [ "$(losses cpu)" != "$(losses bf16)" ] || fail "bf16 products gave exactly the fp32 losses"
  loss_fell bf16.txt || fail "the bf16 run's loss did not fall: $(grep '^done:' bf16.txt)"
  ;;
shakespeare)
  if [ ! -f "$shakespeare" ]; then
    echo "skipped: $shakespeare is absent"
    exit 77
  fi
  "$moas" train "${tiny[@]}" --steps 10 --data "$shakespeare" --out run >out.txt
  grep -q "data: $shakespeare" out.txt || fail "the data source was not reported"
  grep -q '^done:' out.txt && [ -s run/model.safetensors ] || fail "training on $shakespeare did not finish"
  "$moas" generate --checkpoint run --prompt 'ROMEO:' --tokens 20 >/dev/null 2>&1 || fail "generate after Shakespeare"
  ;;
*)
  fail "unknown case $case_name"
  ;;
esac
echo "PASS: $case_name"
