#!/usr/bin/env python3
"""Runs bench_layer (JSON output) and prints, per shape, each head-selection strategy's forward + backward tokens/s
through the attention-layer ABI and its speed relative to AllHeads at the same shape.

    tools/bench_layer.py [--bench build/bench/bench_layer] [--min-time 2] [--repetitions 3] [--avx512]

--repetitions N runs every benchmark N times, interleaved in random order, and keeps each one's fastest run.
--avx512 drops the OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE pin for this run.
"""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_report import benchmark_env  # noqa: E402

SHAPES = {"rustgpt": "RustGPT default: C=128, H=8, 4 kv heads, T=80, B=1",
          "paper": "paper width and context: C=384, H=8, 4 kv heads, T=256, B=12"}
LABELS = {"all": "AllHeads", "mix2_4of6": "MixtureOfHeads {2 shared + 4 of 6}", "prune6": "StaticPruning {6 of 8}"}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser.add_argument("--bench", default=os.path.join(root, "build", "bench", "bench_layer"))
    parser.add_argument("--min-time", default="2", help="seconds per benchmark (--benchmark_min_time)")
    parser.add_argument("--repetitions", type=int, default=3, help="runs per benchmark; the fastest is kept")
    parser.add_argument("--avx512", action="store_true", help="unset the OpenBLAS Haswell pin for this run")
    args = parser.parse_args()

    command = [args.bench, "--benchmark_format=json", f"--benchmark_min_time={args.min_time}"]
    if args.repetitions > 1:
        command += [f"--benchmark_repetitions={args.repetitions}", "--benchmark_enable_random_interleaving=true"]
    report = json.loads(subprocess.run(command, env=benchmark_env(args.avx512), check=True, capture_output=True,
                                       text=True).stdout)
    fastest = {}
    for run in report["benchmarks"]:
        if run.get("run_type", "iteration") != "iteration":
            continue
        _, shape, strategy = run["run_name"].split("/")[:3]
        if (shape, strategy) not in fastest or run["real_time"] < fastest[(shape, strategy)]["real_time"]:
            fastest[(shape, strategy)] = run

    context = report["context"]
    print(f"{context['libmoas']}; OPENBLAS_CORETYPE={context['openblas_coretype']}; "
          f"min time {args.min_time} s per benchmark, fastest of {args.repetitions}")
    print()
    print("| shape | head selection | tokens/s (fwd+bwd) | vs AllHeads |")
    print("|---|---|---:|---:|")
    for shape, description in SHAPES.items():
        base = fastest.get((shape, "all"))
        for strategy, label in LABELS.items():
            run = fastest.get((shape, strategy))
            if run is None:
                continue
            speed = run["items_per_second"]
            ratio = f"{speed / base['items_per_second']:.2f}x" if base else "—"
            print(f"| {description} | {label} | {speed:,.0f} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
