#!/usr/bin/env python3
"""Decoding against the memory bound: runs bench/bench_decode (one run: bandwidth, decode, prefill, cache attention)
and prints every figure beside its bound, then PyTorch eager's KV-cache decode of the same models
(tools/torch_decode.py, left out without torch).

    tools/bench_decode.py [--bench build/bench/bench_decode] [--filter REGEX] [--min-time 0.5] [--repetitions 1]
                          [--no-torch] [--json FILE]

Bounds, from the read bandwidth measured in the same run at the same thread count and the bytes one sequence's step
must read (moas_decode_read_bytes; docs/decoding.md says what they count):
  weights bound  = bandwidth / weight_bytes * batch   (a step reads each weight it uses once)
  full bound     = bandwidth / (weight_bytes + batch * cache_bytes) * batch
Cache attention on its own is reported as GB/s of keys and values read against the same bandwidth.

Run it with an interpreter that has torch (e.g. /tmp/torchvenv/bin/python) for the PyTorch column.
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_report import benchmark_env  # noqa: E402

ROOT = os.path.dirname(HERE)
KINDS = ("MHA", "GQA2", "MQA", "MoAS_soft", "MoAS_top1", "MoH75", "StaticPruning75")


def run_bench(args):
    command = [args.bench, "--benchmark_format=json", f"--benchmark_min_time={args.min_time}"]
    if args.repetitions > 1:
        command.append(f"--benchmark_repetitions={args.repetitions}")
    if args.filter:
        command.append(f"--benchmark_filter={args.filter}")
    done = subprocess.run(command, env=benchmark_env(False), capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{args.bench} failed (exit {done.returncode}):\n{done.stderr.strip()}")
    return json.loads(done.stdout)


def fastest_runs(report):
    """{name: run} keeping the fastest repetition of each benchmark."""
    best = {}
    for run in report["benchmarks"]:
        if run.get("run_type", "iteration") != "iteration":
            continue
        name = run["run_name"].removesuffix("/real_time")
        if run.get("error_occurred"):
            sys.exit(f"{name}: {run.get('error_message')}")
        if name not in best or run["real_time"] < best[name]["real_time"]:
            best[name] = run
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", default=os.path.join(ROOT, "build", "bench", "bench_decode"))
    parser.add_argument("--filter", help="--benchmark_filter (smoke runs)")
    parser.add_argument("--min-time", default="0.5", help="seconds per benchmark (--benchmark_min_time)")
    parser.add_argument("--repetitions", type=int, default=1)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--json", help="also write every figure to this file")
    args = parser.parse_args()
    if not os.access(args.bench, os.X_OK):
        sys.exit(f"{args.bench} is not an executable: build the bench_decode target, or pass --bench")

    report = run_bench(args)
    runs = fastest_runs(report)
    context = report["context"]
    print(f"bench_decode on {context.get('host_name')}: {context.get('num_cpus')} CPUs, "
          f"load average {context.get('load_avg')}")

    read = {t: runs[f"ReadBandwidth/threads{t}"]["GB/s"] for t in (1, 2)
            if f"ReadBandwidth/threads{t}" in runs}
    copy = {t: runs[f"CopyBandwidth/threads{t}"]["GB/s"] for t in (1, 2) if f"CopyBandwidth/threads{t}" in runs}
    for t in sorted(read):
        print(f"bandwidth, {t} thread{'s' if t > 1 else ''}: read {read[t]:.1f} GB/s, copy {copy.get(t, 0):.1f} GB/s")
    out = {"read_GBps": read, "copy_GBps": copy, "decode": [], "cache_attention": [], "prefill": []}

    torch = None
    if not args.no_torch:
        from torch_decode import decode_tokens_per_s, load_torch
        torch, why_not = load_torch()
        if why_not:
            print(why_not)

    print("\nDecode (tokens/s of all sequences; bounds from the read bandwidth at the same thread count)")
    header = ("| kind | threads | batch | context | tokens/s | weights bound | of it | full bound | of it | "
              "x batch 1 | PyTorch eager | libmoas / PyTorch |")
    print(header + "\n" + "|---" * 12 + "|")
    for kind in KINDS:
        for threads in (1, 2):
            for context_len in (256, 4096):
                batch1 = None
                for batch in (1, 8):
                    name = f"Decode/{kind}/batch{batch}/context{context_len}/threads{threads}"
                    if name not in runs or threads not in read:
                        continue
                    r = runs[name]
                    rate, bandwidth = r["tokens_per_s"], read[threads] * 1e9
                    kv_read = r["cache_bytes"]
                    weights_bound = bandwidth / r["weight_bytes"] * batch
                    full_bound = bandwidth / (r["weight_bytes"] + batch * kv_read) * batch
                    batch1 = rate if batch == 1 else batch1
                    scaling = f"{rate / batch1:.1f}x" if batch > 1 and batch1 else ""
                    # PyTorch at its best: explicit attention or scaled_dot_product_attention, whichever is faster.
                    torch_rate = max(decode_tokens_per_s(torch, kind, batch, context_len, threads, sdpa=sdpa) or 0
                                     for sdpa in (False, True)) if torch else None
                    torch_text = f"{torch_rate:,.0f}" if torch_rate else "-"
                    ratio = f"{rate / torch_rate:.2f}x" if torch_rate else "-"
                    print(f"| {kind} | {threads} | {batch} | {context_len} | {rate:,.0f} | {weights_bound:,.0f} | "
                          f"{rate / weights_bound:.0%} | {full_bound:,.0f} | {rate / full_bound:.0%} | {scaling} | "
                          f"{torch_text} | {ratio} |", flush=True)
                    out["decode"].append({"kind": kind, "threads": threads, "batch": batch, "context": context_len,
                                          "tokens_per_s": rate, "weights_bound": weights_bound,
                                          "full_bound": full_bound, "weight_bytes": r["weight_bytes"],
                                          "kv_bytes_per_token": r["kv_bytes_per_token"],
                                          "torch_tokens_per_s": torch_rate})

    print("\nCache attention alone: one query per head (6 heads, head_dim 64) over 4096 cached positions")
    print("| kv heads | batch | threads | K+V GB/s | of read bandwidth |\n|---|---|---|---|---|")
    for kv in (6, 2, 1):
        for batch in (1, 8):
            for threads in (1, 2):
                name = f"CacheAttention/kv{kv}/batch{batch}/context4096/threads{threads}"
                if name in runs and threads in read:
                    rate = runs[name]["GB/s"]
                    print(f"| {kv} | {batch} | {threads} | {rate:.1f} | {rate / read[threads]:.0%} |")
                    out["cache_attention"].append({"kv_heads": kv, "batch": batch, "threads": threads, "GBps": rate})

    print("\nPrefill of one 256-token sequence against the forward over the same tokens (tokens/s)")
    print("| kind | threads | prefill | eval forward | training forward | prefill / training forward |")
    print("|---|---|---|---|---|---|")
    for kind in KINDS:
        for threads in (1, 2):
            names = [f"{p}/{kind}/T256/threads{threads}" for p in ("Prefill", "EvalForward", "TrainForward")]
            if all(n in runs for n in names):
                pre, ev, tr = (runs[n]["tokens_per_s"] for n in names)
                print(f"| {kind} | {threads} | {pre:,.0f} | {ev:,.0f} | {tr:,.0f} | {pre / tr:.2f} |")
                out["prefill"].append({"kind": kind, "threads": threads, "prefill": pre, "eval_forward": ev,
                                       "train_forward": tr})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
