#!/usr/bin/env bash
# End-to-end checks of the moas command line, one case per ctest test.
# Usage: cli_test.sh CASE MOAS_BINARY WORK_DIR SHAKESPEARE_FILE
# Exit 0: passed; 77: skipped (ctest SKIP_RETURN_CODE); anything else: failed, with the reason on stderr.
set -euo pipefail
case_name=$1
moas=$2
work=$3
shakespeare=$4
tests=$(cd "$(dirname "$0")" && pwd)
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
  grep "^{\"step\":$2,\"lr\"" "$1" | sed 's/,"tokens_per_s":.*}$/}/'
}

# refused CODE MESSAGE -- ARGS: moas ARGS exits with CODE and a one-line message containing MESSAGE.
refused() {
  local code=$1 message=$2 status
  shift 3
  set +e
  "$moas" "$@" >/dev/null 2>refused.txt
  status=$?
  set -e
  [ "$status" -eq "$code" ] || fail "moas $*: exit $status, expected $code ($(cat refused.txt))"
  [ "$(wc -l <refused.txt)" -eq 1 ] && grep -qF -- "$message" refused.txt ||
    fail "moas $*: the message does not say '$message' in one line: $(cat refused.txt)"
}

# The steps of a metrics.jsonl's training entries, one a line, in file order.
train_steps() {
  grep '"lr"' "$1" | sed 's/^{"step":\([0-9]*\),.*/\1/'
}

# A run directory holds its latest checkpoint pair and nothing else of other saves: DIR/latest names
# checkpoints/step-N, DIR/checkpoints holds only that pair, and DIR/model.safetensors is its weights.
only_pair() {
  local pair
  pair="checkpoints/$(printf 'step-%06d' "$2")"
  [ "$(cat "$1/latest")" = "$pair" ] || fail "$1/latest names $(cat "$1/latest"), not $pair"
  [ "$(ls "$1/checkpoints")" = "${pair#checkpoints/}" ] || fail "$1/checkpoints holds $(ls "$1/checkpoints")"
  [ "$(ls "$1/$pair")" = "$(printf 'model.optim.safetensors\nmodel.safetensors')" ] || fail "$1/$pair: $(ls "$1/$pair")"
  [ "$1/model.safetensors" -ef "$1/$pair/model.safetensors" ] || fail "$1/model.safetensors is not $pair's weights"
  [ -z "$(ls "$1" | grep -v -x -e latest -e checkpoints -e model.safetensors -e metrics.jsonl -e train.svg)" ] ||
    fail "stray files in $1: $(ls "$1")"
}

case "$case_name" in
train)
  "$moas" train "${tiny[@]}" --steps 20 --log-every 1 --out run >out.txt 2>err.txt
  for f in model.safetensors checkpoints/step-000020/model.optim.safetensors metrics.jsonl; do
    [ -s "run/$f" ] || fail "run/$f was not written"
  done
  only_pair run 20
  [ "$(grep -c '"train_loss"' run/metrics.jsonl)" -eq 20 ] || fail "metrics.jsonl should hold 20 training entries"
  grep -q '"val_loss"' run/metrics.jsonl || fail "metrics.jsonl has no validation entry"
  grep '"step":20,"lr"' run/metrics.jsonl |
    grep -Eq '"grad_norm":[0-9.e+-]+,"tokens_per_s":[0-9.e+-]+,"elapsed_s":[0-9.e+-]+,'\
'"time":"20[0-9-]{8}T[0-9:]{8}Z"' ||
    fail "a training entry lacks grad_norm, elapsed_s or time: $(grep '"step":20,"lr"' run/metrics.jsonl)"
  grep -q 'threads' out.txt || fail "the thread count was not printed"
  grep -q '</svg>' run/train.svg && [ "$(grep -c '<polyline' run/train.svg)" -eq 2 ] &&
    grep -q 'no routed attention' run/train.svg || fail "run/train.svg lacks the loss curves of an unrouted model"
  loss_fell out.txt || fail "the training loss did not fall: $(grep '^done:' out.txt)"
  # The progress line's validation loss is an earlier step's (validations every 2 steps here), and says which.
  grep -q '^step  2/20  loss [0-9.]*  val [0-9.]* @ step 0  lr' out.txt ||
    fail "step 2 does not show step 0's validation: $(grep '^step  2/20' out.txt)"
  measured=$(sed -n 's/^step 2  val loss \([0-9.]*\).*/\1/p' out.txt)
  grep -q "^step  3/20  loss [0-9.]*  val $measured @ step 2  lr" out.txt ||
    fail "step 3 does not show step 2's validation ($measured): $(grep '^step  3/20' out.txt)"
  # 20 steps inside the default 50-step warm-up: a warning that says what to change. A warm-up shorter than the
  # run draws none.
  grep -q '^moas: warning: --warmup 50 is not below --steps 20: .*lower --warmup (e.g. --warmup 2) or raise --steps' \
    err.txt || fail "no warm-up warning: $(cat err.txt)"
  "$moas" train "${tiny[@]}" --steps 4 --warmup 2 --out short >/dev/null 2>err.txt
  [ ! -s err.txt ] || fail "a 2-step warm-up of 4 steps drew a message: $(cat err.txt)"
  # Routing lines: MoAS gates are shares, in percent; MoH gates are weights (they may exceed 1), plain numbers.
  "$moas" train "${tiny[@]}" --steps 2 --attention moas --moas-mode soft --branches 4,1 --out moas >moas.txt 2>&1
  grep -q '^step 2  val loss [0-9.]*  routing mha/mqa (argmax% | gate%): L0 [0-9]*/[0-9]* | [0-9]*/[0-9]* ' \
    moas.txt || fail "no MoAS routing line in percent: $(grep 'val loss' moas.txt)"
  "$moas" train "${tiny[@]}" --steps 2 --attention moh --heads-strategy mixture --out moh >moh.txt 2>&1
  moh_line='^step 2  val loss [0-9.]*  routing h1/h2/h3 (share% | mean gate weight): L0 [0-9/]* | [0-9]\.[0-9][0-9]/'
  grep -q "$moh_line" moh.txt || fail "no MoH routing line with gate weights: $(grep 'val loss' moh.txt)"
  grep -q 'mean gate weight, the factor its output is' <<<"$("$moas" train --help)" ||
    fail "--help does not explain gates"
  ;;
save_every)
  # Checkpoints at every validation unless --save-every says otherwise (0: only at the end); the last pair is kept.
  saved_steps() { grep '^saved the checkpoint of step' "$1" | sed 's/^saved the checkpoint of step \([0-9]*\) .*/\1/'; }
  "$moas" train "${tiny[@]}" --steps 20 --eval-every 4 --out default >default.txt
  [ "$(saved_steps default.txt)" = "$(seq 4 4 20)" ] || fail "the default saved at $(saved_steps default.txt | xargs)"
  "$moas" train "${tiny[@]}" --steps 20 --save-every 0 --out end >end.txt
  [ "$(saved_steps end.txt)" = 20 ] || fail "--save-every 0 saved at $(saved_steps end.txt | xargs)"
  "$moas" train "${tiny[@]}" --steps 20 --save-every 6 --out six >six.txt
  [ "$(saved_steps six.txt)" = "$(printf '6\n12\n18\n20')" ] ||
    fail "--save-every 6 saved at $(saved_steps six.txt | xargs)"
  for run in default end six; do only_pair "$run" 20; done
  grep -q -- '--save-every VALUE .*auto: at every validation.*\[auto\]' <<<"$("$moas" train --help)" ||
    fail "--help does not give --save-every's default: $("$moas" train --help | grep -- --save-every)"
  ;;
resume)
  # 20 steps straight, and 10 steps then a resumption to 20, with dropout on: the same losses and weights.
  common=("${tiny[@]}" --steps 20 --dropout 0.1 --log-every 1)
  "$moas" train "${common[@]}" --out straight >/dev/null
  "$moas" train "${common[@]}" --stop-at 10 --out split >/dev/null
  grep -q '"step":10,"lr"' split/metrics.jsonl || fail "the first half did not reach step 10"
  "$moas" train --resume --out split >resumed.txt
  grep -q 'resuming split/checkpoints/step-000010/model.safetensors at step 10' resumed.txt ||
    fail "the resumption did not start at step 10: $(grep resuming resumed.txt)"
  expected=$(train_entry straight/metrics.jsonl 20)
  actual=$(train_entry split/metrics.jsonl 20)
  [ -n "$expected" ] && [ "$expected" = "$actual" ] || fail "step 20 differs: straight $expected, resumed $actual"
  [ "$(train_steps split/metrics.jsonl)" = "$(seq 1 20)" ] || fail "split/metrics.jsonl lacks or repeats a step"
  same_pair() {
    only_pair "$1" 20
    for f in model.safetensors model.optim.safetensors; do
      cmp -s "straight/checkpoints/step-000020/$f" "$1/checkpoints/step-000020/$f" ||
        fail "$1's $f differs from the straight run's"
    done
  }
  only_pair straight 20
  same_pair split

  # Killed between the weights and the optimizer state of step 16 (the moment that once left a run that could never
  # resume), with temporary files left behind, DIR/model.safetensors not the latest weights, and metrics logged past
  # step 10, the last line cut short: the resumption starts from step 10, logs each step once, and tidies up.
  "$moas" train "${common[@]}" --stop-at 10 --out killed >/dev/null
  "$moas" train "${common[@]}" --stop-at 4 --out older >/dev/null
  mkdir killed/checkpoints/step-000016
  cp older/model.safetensors killed/checkpoints/step-000016/model.safetensors
  printf 'half an optimizer' >killed/checkpoints/step-000016/model.optim.safetensors.tmp
  rm killed/model.safetensors
  cp older/model.safetensors killed/model.safetensors
  for f in latest.tmp model.safetensors.tmp metrics.jsonl.tmp; do printf 'cut short' >"killed/$f"; done
  grep '"step":1[1-6],' straight/metrics.jsonl >>killed/metrics.jsonl
  printf '{"step":17,"lr":0.00' >>killed/metrics.jsonl
  "$moas" train --resume --out killed >resumed.txt
  grep -q 'resuming killed/checkpoints/step-000010/model.safetensors at step 10' resumed.txt ||
    fail "the resumption after a kill did not start at step 10: $(grep resuming resumed.txt)"
  [ "$(train_steps killed/metrics.jsonl)" = "$(seq 1 20)" ] || fail "killed/metrics.jsonl lacks or repeats a step"
  same_pair killed

  # A run that an earlier moas wrote (DIR/model.safetensors beside DIR/model.optim.safetensors) resumes too, and its
  # next save moves it to the new layout.
  "$moas" train "${common[@]}" --stop-at 10 --out legacy >/dev/null
  mv legacy/checkpoints/step-000010/model.optim.safetensors legacy/
  rm -r legacy/checkpoints legacy/latest
  "$moas" train --resume --out legacy >resumed.txt
  grep -q 'resuming legacy/model.safetensors at step 10' resumed.txt || fail "the earlier layout did not resume"
  same_pair legacy
  ;;
generate)
  "$moas" train "${tiny[@]}" --steps 10 --out run >/dev/null
  "$moas" generate --checkpoint run/model.safetensors --tokens 80 --seed 3 >text.txt 2>err.txt
  [ "$(wc -c <text.txt)" -gt 40 ] || fail "generate printed too little text: $(cat text.txt)"
  grep -q 'bytes per token' err.txt || fail "no bytes-per-token line: $(cat err.txt)"
  grep -q 'tokens/s' err.txt || fail "no tokens/s figure: $(cat err.txt)"
  grep -Eq "^decode steps: [0-9]+ tokens/s, each reading [0-9.]+ MB \(weights and KV cache\) at [0-9.]+ GB/s: \
[0-9]+% of this machine's read bandwidth" err.txt || fail "no fraction of the decode bound: $(cat err.txt)"
  # The same seed samples the same text, whichever path names the weights; the cache is refilled (80 tokens > block
  # 32) along the way.
  for checkpoint in run run/checkpoints/step-000010/model.safetensors; do
    "$moas" generate --checkpoint "$checkpoint" --tokens 80 --seed 3 >again.txt 2>/dev/null
    cmp -s text.txt again.txt || fail "the same --seed sampled different text from $checkpoint"
  done
  grep -q 'refilled [1-9]' err.txt || fail "the cache was never refilled: $(cat err.txt)"
  # CoPE and a sliding window travel through the checkpoint into decoding.
  "$moas" train "${tiny[@]}" --steps 4 --position cope --cope-max-pos 8 --window 6 --out cope >cope.txt
  grep -q 'CoPE (8 positions), window 6' cope.txt || fail "the CoPE model was not described: $(grep '^model' cope.txt)"
  "$moas" generate --checkpoint cope --tokens 40 --seed 3 >cope_text.txt 2>/dev/null || fail "generate with CoPE"
  [ "$(wc -c <cope_text.txt)" -gt 20 ] || fail "generate with CoPE printed too little text"
  # Short flags are the long ones; --top-p 1 keeps every token, so it samples what the default does.
  "$moas" generate -m run -n 80 --seed 3 --top-p 1 >short.txt 2>/dev/null
  cmp -s text.txt short.txt || fail "-m/-n/--top-p 1 sampled other text than --checkpoint/--tokens"
  # A nucleus too small for a second token is the argmax: the text of temperature 0.
  "$moas" generate -m run -n 40 --temperature 0 >greedy.txt 2>/dev/null
  "$moas" generate -m run -n 40 --top-p 0.000001 --seed 9 >nucleus.txt 2>/dev/null
  cmp -s greedy.txt nucleus.txt || fail "--top-p 0.000001 did not pick the most likely tokens"
  "$moas" generate -m run -n 80 --seed 3 --top-p 0.9 >p09.txt 2>/dev/null
  "$moas" generate -m run -n 80 --seed 3 --top-p 0.9 >p09_again.txt 2>/dev/null
  cmp -s p09.txt p09_again.txt || fail "--top-p 0.9 is not reproducible"
  # --prompt-file gives what -p gives (the file's text exactly, its final newline included).
  printf 'c4 x1 q7\n' >prompt.txt
  "$moas" generate -m run -p $'c4 x1 q7\n' -n 20 --seed 3 >prompted.txt 2>/dev/null
  "$moas" generate -m run --prompt-file prompt.txt -n 20 --seed 3 >from_file.txt 2>/dev/null
  cmp -s prompted.txt from_file.txt || fail "--prompt-file sampled other text than -p with the same text"
  head -1 from_file.txt | grep -qx 'c4 x1 q7' || fail "the prompt was not printed: $(head -1 from_file.txt)"
  # --num-samples K: the samples of seeds S, S+1, ..., each after its own line.
  "$moas" generate -m run -n 30 --seed 3 --num-samples 3 >three.txt 2>err.txt
  grep -q '^generated 90 tokens' err.txt || fail "the summary does not count every sample: $(cat err.txt)"
  for seed in 3 4 5; do
    [ "$seed" = 3 ] || echo
    echo "=== sample $((seed - 2)) of 3 (seed $seed) ==="
    "$moas" generate -m run -n 30 --seed "$seed" 2>/dev/null
  done >expected.txt
  cmp -s expected.txt three.txt || fail "--num-samples 3 is not the samples of seeds 3, 4, 5: $(cat three.txt)"
  ;;
eval)
  # A text the model can learn: eval scores the later checkpoint lower, the same every time, and its perplexity and
  # bits per token are the loss's.
  for i in $(seq 1 40); do echo "the quick brown fox jumps over the lazy dog $((i % 7))"; done >text.txt
  "$moas" train "${tiny[@]}" --steps 2 --data text.txt --out early >/dev/null 2>&1
  "$moas" train "${tiny[@]}" --steps 60 --warmup 5 --lr 1e-2 --data text.txt --out late >/dev/null
  "$moas" eval --checkpoint early --data text.txt >early.txt
  "$moas" eval -m late --data text.txt >late.txt
  "$moas" eval -m late/model.safetensors --data text.txt >again.txt
  cmp -s late.txt <(sed 's|late/model.safetensors$|late/checkpoints/step-000060/model.safetensors|' again.txt) ||
    fail "eval is not reproducible: $(cat late.txt again.txt)"
  grep -q '^eval: text.txt, 1[0-9]* tokens; 64 windows of 32 tokens; late/checkpoints/step-000060/model.safetensors$' \
    late.txt || fail "no eval line: $(cat late.txt)"
  loss() { sed -n 's/^loss \([0-9.]*\)  .*/\1/p' "$1"; }
  awk -v early="$(loss early.txt)" -v late="$(loss late.txt)" 'BEGIN { exit !(late > 0 && late < early - 0.5) }' ||
    fail "the trained checkpoint does not score lower: early $(loss early.txt), late $(loss late.txt)"
  read -r _ l _ ppl _ _ _ bits < <(grep '^loss' late.txt)
  awk -v l="$l" -v p="$ppl" -v b="$bits" 'BEGIN { exit !(p - exp(l) < 1e-3 * p && exp(l) - p < 1e-3 * p &&
    b - l / log(2) < 1e-3 && l / log(2) - b < 1e-3) }' ||
    fail "perplexity or bits disagree with the loss: $(cat late.txt)"
  grep -q '; 16 windows of 16 tokens;' <<<"$("$moas" eval -m late --data text.txt --batches 2 --block 16)" ||
    fail "--batches 2 --block 16 did not score 16 windows of 16 tokens"
  printf 'the quick brown fox!' >foreign.txt
  set +e
  "$moas" eval -m late --data foreign.txt >/dev/null 2>err.txt
  status=$?
  set -e
  [ "$status" = 1 ] &&
    grep -q "^moas: --data foreign.txt: the character '!' (U+0021) is not in the model's vocabulary" err.txt ||
    fail "a character outside the vocabulary: exit $status, $(cat err.txt)"
  ;;
sample_every)
  # Samples every N steps, labelled with the step, without changing what is trained.
  common=("${tiny[@]}" --steps 10 --log-every 1)
  "$moas" train "${common[@]}" --out plain >/dev/null
  "$moas" train "${common[@]}" --sample-every 5 --out sampled >out.txt
  [ "$(grep -c '^sample at step' out.txt)" = 2 ] || fail "not two samples: $(grep '^sample' out.txt)"
  for step in 5 10; do
    grep -A1 "^sample at step $step (100 tokens, temperature 0.8, seed 1337):\$" out.txt | tail -1 | grep -q . ||
      fail "no sample text at step $step: $(cat out.txt)"
  done
  for step in 1 5 6 10; do
    [ "$(train_entry plain/metrics.jsonl $step)" = "$(train_entry sampled/metrics.jsonl $step)" ] ||
      fail "sampling changed the training at step $step"
  done
  grep -aq 'sample-every\\":\\"5\\"' sampled/model.safetensors || fail "the checkpoint does not record --sample-every"
  grep -q -- '--sample-every VALUE .*samples printed' <<<"$("$moas" train --help)" ||
    fail "train --help lacks --sample-every"
  ;;
compare)
  "$moas" compare "${tiny[@]}" --steps 10 --eval-batches 2 --out cmp >out.txt 2>err.txt
  # Once for all variants: they share the schedule.
  [ "$(wc -l <err.txt)" -eq 1 ] && grep -q '^moas: warning: --warmup 50 is not below --steps 10: .*--warmup 1)' \
    err.txt ||
    fail "compare did not warn once about the warm-up: $(cat err.txt)"
  grep -q '^| variant | val loss | parameters | tokens/s | KV bytes/token |' out.txt || fail "no table header"
  for v in mha gqa mqa moas-static moas-soft moas-top1 moh; do
    grep -q "^| $v | [0-9]" out.txt || fail "the table has no row for $v"
  done
  [ -s cmp/compare.svg ] && grep -q '</svg>' cmp/compare.svg || fail "cmp/compare.svg is missing or incomplete"
  grep -q '<polyline' cmp/compare.svg || fail "compare.svg has no loss curves"
  [ -s cmp/compare.json ] || fail "cmp/compare.json was not written"
  # A routed variant's own figure draws its routes' shares beside its losses.
  [ "$(grep -c '<polyline' cmp/moas-top1/train.svg)" -eq 5 ] && grep -q '>gqa2</text>' cmp/moas-top1/train.svg ||
    fail "cmp/moas-top1/train.svg lacks the three routes' share curves"
  ;;
compare_seeds)
  "$moas" compare "${tiny[@]}" --steps 12 --warmup 2 --eval-batches 2 --seeds 2 --seed 7 \
    --variants moas-top1,mha,moh-all --out cmp >out.txt
  grep -q '^| variant | val loss (mean ± std, 2 seeds) |' out.txt || fail "no mean ± std header: $(cat out.txt)"
  # Rows in --variants' order.
  [ "$(grep -o '^| [a-z0-9-]* | [0-9]' out.txt | cut -d' ' -f2 | tr '\n' ' ')" = "moas-top1 mha moh-all " ] ||
    fail "the rows are not moas-top1, mha, moh-all: $(cat out.txt)"
  for v in moas-top1 mha moh-all; do
    for s in 7 8; do
      [ -s "cmp/$v/seed-$s/model.safetensors" ] || fail "cmp/$v/seed-$s was not trained"
    done
  done
  python3 - cmp/compare.json <<'PY' || fail "compare.json does not hold the seeds' runs and their statistics"
import json, statistics, sys
doc = json.load(open(sys.argv[1]))
assert doc["seeds"] == 2
rows = {v["variant"]: v for v in doc["variants"]}
for name, v in rows.items():
    losses = [r["val_loss"] for r in v["runs"]]
    assert [r["seed"] for r in v["runs"]] == [7, 8], name
    assert losses[0] != losses[1], f"{name}: both seeds gave the same loss"
    assert abs(v["val_loss"] - statistics.mean(losses)) < 1e-12, name
    assert abs(v["val_loss_std"] - statistics.stdev(losses)) < 1e-12, name
    assert len(v["val_curve_std"]) == len(v["val_curve"]) > 1, name
# MoH AllHeads is MHA: the same weights, batches and arithmetic give the same bits.
assert rows["mha"]["runs"] == [{**r, "tokens_per_s": m["tokens_per_s"]} for r, m in
                               zip(rows["moh-all"]["runs"], rows["mha"]["runs"])]
assert len(rows["moas-top1"]["routing_last_layer"]["share"]) == 3
PY
  grep -q '<polygon' cmp/compare.svg && grep -q 'whiskers: +-1 std over seeds' cmp/compare.svg ||
    fail "compare.svg draws no bands or whiskers for 2 seeds"
  refused 2 "unknown variant 'gpt'" -- compare --variants mha,gpt --out bad
  refused 2 '--variants names mha twice' -- compare --variants mha,mha --out bad
  refused 2 '--seeds applies to moas compare only' -- train --seeds 2 --out bad
  refused 2 '--seeds 0 is out of range' -- compare --seeds 0 --out bad
  ;;
bad_input)
  : >empty.txt
  printf 'too short for any context' >short.txt
  printf '\xff\xfe not UTF-8' >binary.txt
  printf '{"layers": ' >broken.json
  printf '{"layers": 1, "steps": 4, "layers": 2}' >twice.json
  mkdir config_dir
  "$moas" train "${tiny[@]}" --steps 4 --out good >/dev/null
  before=$(cksum good/model.safetensors)
  # expect CODE [MESSAGE] -- ARGS: refused, with the message starting "moas: " and nothing written into ./bad.
  expect() {
    refused "$@"
    grep -q '^moas: ' refused.txt || fail "moas ${*:4}: unexpected message: $(cat refused.txt)"
    [ ! -e bad ] || fail "moas ${*:4} left ./bad behind"
  }
  expect 2 '' --
  expect 2 '' -- frobnicate
  expect 2 "takes no arguments, not '--junk'" -- --version --junk
  expect 2 "takes no arguments, not 'train'" -- --help train
  expect 1 '' -- train --data missing.txt --out bad
  expect 1 '' -- train --data empty.txt --out bad
  expect 1 '' -- train --data short.txt --out bad
  expect 1 '' -- train --data binary.txt --out bad
  expect 2 '' -- train --no-such-flag 1 --out bad
  expect 2 '' -- train --lr fast --out bad
  expect 2 '' -- train --layers 0 --out bad
  expect 2 '' -- train --steps --out bad
  expect 2 '' -- train --attention sideways --out bad
  expect 2 '' -- train --position cope --cope-max-pos 0 --out bad
  expect 2 '' -- train --window -1 --out bad
  expect 2 '' -- train --device tpu --out bad
  expect 2 '' -- train --matmul-precision fp16 --out bad
  expect 2 '' -- train --width 30 --heads 4 --out bad
  # Numbers are plain decimals: no hex float, no space around them, nothing after them.
  expect 2 "'0x1p-3' is not a number" -- train --lr 0x1p-3 --out bad
  expect 2 "' 0.001' is not a number" -- train --lr ' 0.001' --out bad
  expect 2 "'0.001x' is not a number" -- train --lr 0.001x --out bad
  expect 2 "'5 ' is not a whole number" -- train --steps '5 ' --out bad
  expect 2 "' 7' is not a whole number" -- train --seed ' 7' --out bad
  expect 2 "' -1' is not a whole number" -- train --seed ' -1' --out bad
  expect 2 "'0x10' is not a whole number" -- train --layers 0x10 --out bad
  expect 2 'e.g. 6,2,1' -- train --branches ' 2,1' --out bad
  expect 2 "'0x1p-3' is not a number" -- generate --checkpoint good --temperature 0x1p-3
  expect 2 "' 10' is not a whole number" -- generate --checkpoint good --tokens ' 10'
  expect 2 "' 3' is not a whole number" -- generate --checkpoint good --seed ' 3'
  expect 2 'not valid JSON' -- train --config broken.json --out bad
  expect 2 'gives "layers" twice' -- train --config twice.json --out bad
  expect 1 'config_dir is a directory' -- train --config config_dir --out bad
  expect 2 '' -- compare --attention moas --out bad
  expect 2 '' -- train --resume --out good --layers 2
  expect 2 'already holds a checkpoint' -- train --out good
  expect 1 'no checkpoint in bad' -- train --resume --out bad
  expect 2 '' -- generate --checkpoint good --prompt ABC
  expect 1 '' -- generate --checkpoint missing.safetensors
  expect 1 '' -- generate --checkpoint empty.txt
  expect 2 "'tpu' is not one of cpu|cuda" -- generate --checkpoint good --device tpu
  printf 'q' >prompt.txt
  expect 2 'give either --prompt or --prompt-file, not both' -- generate -m good -p q --prompt-file prompt.txt
  expect 1 'cannot read --prompt-file missing.txt' -- generate -m good --prompt-file missing.txt
  expect 2 '--top-p 0 keeps no token' -- generate -m good --top-p 0
  expect 2 '--top-p 1.5 is out of range' -- generate -m good --top-p 1.5
  expect 2 '--num-samples 0 is out of range' -- generate -m good --num-samples 0
  expect 2 '-n needs a value' -- generate -m good -n
  expect 2 'unknown flag -x for moas generate' -- generate -m good -x 3
  expect 2 'moas eval needs --data FILE' -- eval -m good
  expect 2 'moas eval needs --checkpoint DIR' -- eval --data short.txt
  expect 2 'longer than the model' -- eval -m good --data short.txt --block 33
  expect 1 'has 25 tokens: a window needs 33' -- eval -m good --data short.txt
  expect 1 "--data binary.txt: the text is not valid UTF-8" -- eval -m good --data binary.txt
  expect 1 'cannot read --data missing.txt' -- eval -m good --data missing.txt
  # --help names every choice flag's words, from the list the parser checks: each one's refusal names the same.
  "$moas" train --help >help.txt
  for listed in 'attention scheme|moas|moh' 'moas-mode static|soft|top1' 'heads-strategy all|mixture|static-pruning' \
    'norm layernorm|rmsnorm' 'mlp gelu|swiglu' 'position learned|rope|cope' 'device cpu|cuda' \
    'matmul-precision fp32|tf32|bf16'; do
    grep -qF -- "  --$listed " help.txt || grep -qxF -- "  --$listed" help.txt ||
      fail "train --help does not list --$listed: $(grep -F -- "--${listed%% *} " help.txt)"
  done
  for command in train compare; do
    mapfile -t choice_flags < <("$moas" $command --help | grep -o -- '^  --[a-z-]* [a-z0-9-]*|[a-z0-9|-]*')
    [ "${#choice_flags[@]}" -eq "$([ $command = train ] && echo 8 || echo 5)" ] ||
      fail "$command --help lists choices for ${#choice_flags[@]} flags: ${choice_flags[*]}"
    for listed in "${choice_flags[@]}"; do
      read -r name words <<<"$listed"
      expect 2 "$name: 'nothing' is not one of $words" -- $command "$name" nothing --out bad
    done
  done
  grep -qF -- '  --device cpu|cuda     where the model decodes' <<<"$("$moas" generate --help)" ||
    fail "generate --help does not list --device's words"
  [ "$before" = "$(cksum good/model.safetensors)" ] || fail "a refused resumption changed the checkpoint"
  only_pair good 4
  ;;
damaged_checkpoint)
  # Checkpoints whose moas train metadata is damaged: generate and resume say so, naming the file; nothing crashes.
  command -v python3 >/dev/null || { echo "skipped: no python3 to write damaged checkpoints"; exit 77; }
  "$moas" train "${tiny[@]}" --steps 4 --out good >/dev/null
  pair=good/checkpoints/step-000004
  patches=(
    '{"vocabulary": 5}'
    '{"vocabulary": null}'
    '{"vocabulary": {"kind": "characters"}}'
    '{"vocabulary": {"kind": "characters", "characters": 7}}'
    '{"vocabulary": {"kind": "characters", "characters": "aab"}}'
    '{"vocabulary": {"kind": "characters", "characters": "ab"}}'
    '{"vocabulary": {"kind": "bytes"}}'
    '{"moas_train": "1"}'
    '{"step": -3}'
    '{"step": 18446744073709551615}'
    '{"data": {"source": "x", "fingerprint": 5}}'
    '{"options": {"layers": 1}}'
  )
  for patch in "${patches[@]}"; do
    rm -rf damaged
    cp -r good damaged
    rm damaged/model.safetensors
    python3 "$tests/safetensors_metadata.py" "$pair/model.safetensors" \
      "damaged/checkpoints/step-000004/model.safetensors" "$patch"
    ln damaged/checkpoints/step-000004/model.safetensors damaged/model.safetensors
    for command in "generate --checkpoint damaged --tokens 5" "train --resume --steps 8 --out damaged"; do
      read -r -a args <<<"$command"
      set +e
      "$moas" "${args[@]}" >/dev/null 2>err.txt
      status=$?
      set -e
      [ "$status" -eq 1 ] || fail "moas $command with $patch: exit $status, expected 1: $(cat err.txt)"
      [ "$(wc -l <err.txt)" -eq 1 ] && grep -q '^moas: damaged/.*metadata' err.txt ||
        fail "moas $command with $patch: the message does not name the damaged file: $(cat err.txt)"
    done
  done
  # A DIR/latest that names no checkpoint pair (nor anything outside DIR/checkpoints) is refused, not followed;
  # --overwrite replaces the run.
  rm -rf damaged
  cp -r good damaged
  echo '../../good/checkpoints/step-000004' >damaged/latest
  for command in "generate --checkpoint damaged" "train --resume --steps 8 --out damaged" "train --out damaged"; do
    read -r -a args <<<"$command"
    set +e
    "$moas" "${args[@]}" >/dev/null 2>err.txt
    status=$?
    set -e
    [ "$status" -eq 1 ] && grep -q '^moas: damaged/latest does not name a checkpoint' err.txt ||
      fail "moas $command with a damaged DIR/latest: exit $status: $(cat err.txt)"
  done
  "$moas" train "${tiny[@]}" --steps 4 --overwrite --out damaged >/dev/null || fail "--overwrite did not replace it"
  only_pair damaged 4
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
  losses() { sed 's/,"tokens_per_s":.*}$/}/' "$1/metrics.jsonl"; }
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
val_data)
  # --val-data: a separate validation text in --data's characters, part of what a resumed run must see again.
  python3 -c 'import random; r = random.Random(1); print("".join(r.choices("abcdefgh \n", k=3000)))' >train.txt
  python3 -c 'import random; r = random.Random(2); print("".join(r.choices("abcdefgh \n", k=400)))' >val.txt
  "$moas" train "${tiny[@]}" --steps 4 --data train.txt --val-data val.txt --out run >out.txt
  grep -q 'data: train.txt (validation: val.txt), 3,001 train / 401 val tokens' out.txt ||
    fail "the validation text was not used: $(grep '^data:' out.txt)"
  grep -q '"val_loss"' run/metrics.jsonl || fail "no validation entry"
  printf 'abc\nabZd' >foreign.txt
  refused 1 "'Z' (U+005A) at character 6 (line 2, column 3)" -- train "${tiny[@]}" --data train.txt \
    --val-data foreign.txt --out bad
  printf 'abc' >short_val.txt
  refused 1 'needs at least 33' -- train "${tiny[@]}" --data train.txt --val-data short_val.txt --out bad
  refused 2 '--val-data needs --data' -- train "${tiny[@]}" --val-data val.txt --out bad
  # Resuming needs the same validation file, with the same text.
  "$moas" train "${tiny[@]}" --steps 8 --stop-at 4 --data train.txt --val-data val.txt --out part >/dev/null
  cp val.txt other.txt
  refused 2 '--val-data other.txt differs' -- train --resume --out part --val-data other.txt
  cp val.txt saved.txt
  printf 'abc abc abc abc abc abc abc abc abc abc abc\n' >val.txt
  refused 1 'differs from the one' -- train --resume --out part
  cp saved.txt val.txt
  "$moas" train --resume --out part >/dev/null || fail "resuming with the same validation text"
  [ ! -e bad ] || fail "a refused run left ./bad behind"
  ;;
token_files)
  # --data DIR of nanoGPT token files: train.bin and val.bin (uint16 ids), meta.json or --vocab-size.
  cat >make_tokens.py <<'PY'
import json, os, random, struct, sys
# make_tokens.py DIR TRAIN VAL [META_JSON [LLMC]]: a cycle of ids 0..19 with noise, raw or under llm.c's header.
directory, n_train, n_val = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(directory, exist_ok=True)
r = random.Random(0)
for name, n in (("train.bin", n_train), ("val.bin", n_val)):
    ids = [i % 20 if r.random() < 0.9 else r.randrange(50) for i in range(n)]
    header = struct.pack("<256i", *([20240520, 1, n] + [0] * 253)) if len(sys.argv) > 5 else b""
    with open(os.path.join(directory, name), "wb") as f:
        f.write(header + struct.pack("<%dH" % n, *ids))
if len(sys.argv) > 4 and sys.argv[4]:
    with open(os.path.join(directory, "meta.json"), "w") as f:
        f.write(sys.argv[4])
PY
  python3 make_tokens.py tok 3000 500 '{"vocab_size": 50, "tokenizer": "test"}'
  "$moas" train "${tiny[@]}" --steps 6 --data tok --out run >out.txt
  grep -q '^data: tok (test tokens, vocabulary 50), 3,000 train / 500 val tokens' out.txt ||
    fail "the token directory was not read: $(grep '^data:' out.txt)"
  python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); import safetensors_metadata as m
v = m.user_metadata("run/model.safetensors")["vocabulary"]
assert v == {"kind": "tokens", "vocab_size": 50, "tokenizer": "test"}, v' "$tests" ||
    fail "the checkpoint does not record the token vocabulary"
  "$moas" generate --checkpoint run --prompt '1 2 3' --tokens 5 >gen.txt 2>/dev/null
  grep -Eqx '1 2 3( [0-9]+){5}' gen.txt || fail "generate did not print token ids: $(cat gen.txt)"
  refused 2 "'abc' (byte 2) is not a token id" -- generate --checkpoint run --prompt '1 abc'
  refused 2 "'50' (byte 0) is not a token id" -- generate --checkpoint run --prompt '50'
  # Without meta.json the size comes from --vocab-size; an id at or above it is refused with its offset.
  python3 make_tokens.py bare 3000 500
  refused 1 'pass --vocab-size N' -- train "${tiny[@]}" --data bare --out bad
  "$moas" train "${tiny[@]}" --steps 4 --data bare --vocab-size 64 --out bare_run >/dev/null
  "$moas" generate --checkpoint bare_run --prompt '7' --tokens 3 >gen.txt 2>/dev/null
  grep -Eqx '7( [0-9]+){3}' gen.txt || fail "generate without meta.json: $(cat gen.txt)"
  python3 -c 'import struct; open("bare/val.bin", "wb").write(struct.pack("<40H", *([1, 2, 3, 60] + [0] * 36)))'
  refused 1 'bare/val.bin has token id 60 at byte offset 6' -- train "${tiny[@]}" --data bare --vocab-size 50 \
    --out bad
  printf 'x' >>bare/train.bin
  refused 1 'odd number of bytes' -- train "${tiny[@]}" --data bare --vocab-size 64 --out bad
  refused 2 '--vocab-size 40 differs from tok/meta.json' -- train "${tiny[@]}" --data tok --vocab-size 40 --out bad
  refused 2 '--vocab-size applies only' -- train "${tiny[@]}" --vocab-size 40 --out bad
  refused 2 '--bytes does not apply' -- train "${tiny[@]}" --data tok --bytes --out bad
  refused 2 '--val-data does not apply' -- train "${tiny[@]}" --data tok --val-data make_tokens.py --out bad
  # llm.c's files: the 1024-byte header is skipped; meta.json's decode list turns ids into text.
  decode=$(python3 -c 'import json; print(json.dumps({"vocab_size": 50, "decode": ["<%d>" % i for i in range(50)]}))')
  python3 make_tokens.py llmc 3000 500 "$decode" llmc
  "$moas" train "${tiny[@]}" --steps 4 --data llmc --out llmc_run >out.txt
  grep -q '^data: llmc (tokens, vocabulary 50), 3,000 train / 500 val tokens' out.txt ||
    fail "the llm.c header was not skipped: $(grep '^data:' out.txt)"
  "$moas" generate --checkpoint llmc_run --prompt '1 2' --tokens 4 >gen.txt 2>/dev/null
  grep -Eqx '1 2(<[0-9]+>){4}' gen.txt || fail "generate did not decode with meta.json's list: $(cat gen.txt)"
  python3 -c 'import struct; open("llmc/val.bin", "wb").write(struct.pack("<256i", 20240520, 2, 10, *[0] * 253))'
  refused 1 'version 1' -- train "${tiny[@]}" --data llmc --out bad
  # A resumed run must see the same token files.
  "$moas" train "${tiny[@]}" --steps 8 --stop-at 4 --data tok --out part >/dev/null
  python3 make_tokens.py tok 3000 400
  refused 1 'differs from the one' -- train --resume --out part
  [ ! -e bad ] || fail "a refused run left ./bad behind"
  ;;
*)
  fail "unknown case $case_name"
  ;;
esac
echo "PASS: $case_name"
