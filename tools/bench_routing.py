#!/usr/bin/env python3
"""Runs bench_attention (JSON output) and prints, per family and sequence length, what routed attention really
saves: each variant's time for one attention sub-block forward + backward, its time ratio against its dense
counterpart, the ratio the FLOP model allows under the routing the run observed, and measured/FLOP (1.0 = the
savings are fully realised; 1.1 = 10% short of them).

    tools/bench_routing.py [--bench build/bench/bench_attention] [--min-time 2] [--repetitions 1] [--avx512]
                           [--filter REGEX]

--repetitions N runs every benchmark N times, interleaved in random order, and keeps each one's fastest run: on a
shared machine the fastest is the one least disturbed by other work.

--avx512 drops the OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE pin for this run, so OpenBLAS picks its AVX-512 kernels.
"""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_report import benchmark_env  # noqa: E402

# Each variant's comparisons: (family, key) -> the keys it is measured against. Routed variants against the dense
# block of the same family; StaticPruning also against the MixtureOfHeads config with as many active heads (what
# routing costs beyond computing the same number of heads).
BASELINES = {
    ("MoAS_H6", "soft"): ["mha"],
    ("MoAS_H6", "static"): ["mha"],
    ("MoAS_H6", "top1"): ["soft"],
    ("MoH_H6", "mix2_2of4"): ["all"],
    ("MoH_H6", "prune4"): ["all", "mix2_2of4"],
    ("MoH_H8", "mix2_4of6"): ["all"],
    ("MoH_H8", "prune6"): ["all", "mix2_4of6"],
    ("MoH_H8", "mix2_2of6"): ["all"],
    ("MoH_H8", "prune4"): ["all", "mix2_2of6"],
}


def parse(report):
    """{(family, T): {key: fastest run}}, families and configs in the order they are registered."""
    groups = {}
    for run in sorted(report["benchmarks"], key=lambda r: r.get("family_index", 0)):
        if run.get("run_type", "iteration") != "iteration":
            continue
        family, key, seq = run["run_name"].split("/")[:3]
        runs = groups.setdefault((family, int(seq.split(":")[1])), {})
        if key not in runs or run["real_time"] < runs[key]["real_time"]:
            runs[key] = run
    return groups


def shares(run):
    values = [run[k] for k in sorted((k for k in run if k.startswith("share")), key=lambda k: int(k[5:]))]
    return " ".join(f"{v:.2f}" for v in values)


def print_table(family, seq, runs):
    print(f"### {family}, T={seq} (B={4096 // seq})")
    print()
    print("| config | vs | ms fwd+bwd | tok/s | GFLOP/s | time ratio | FLOP ratio | measured/FLOP | routing shares |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for key, run in runs.items():
        ms = run["real_time"]  # the benchmark's unit is milliseconds
        head = f"| {run['label']} "
        numbers = f"| {ms:.1f} | {run['tok/s']:.0f} | {run['GFLOP/s']:.0f} "
        comparisons = [b for b in BASELINES.get((family, key), []) if b in runs]
        if not comparisons:
            print(head + "| — " + numbers + "| | | | " + shares(run) + " |")
        for i, base_key in enumerate(comparisons):
            base = runs[base_key]
            time_ratio = ms / base["real_time"]
            flop_ratio = run["GFLOP_per_iter"] / base["GFLOP_per_iter"]
            print(head + f"| {base['label']} " + (numbers if i == 0 else "| | | ")
                  + f"| {time_ratio:.3f} | {flop_ratio:.3f} | {time_ratio / flop_ratio:.2f} | "
                  + (shares(run) if i == 0 else "") + " |")
    print()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser.add_argument("--bench", default=os.path.join(root, "build", "bench", "bench_attention"))
    parser.add_argument("--min-time", default="2", help="seconds per benchmark (--benchmark_min_time)")
    parser.add_argument("--repetitions", type=int, default=1, help="runs per benchmark; the fastest is kept")
    parser.add_argument("--avx512", action="store_true", help="unset the OpenBLAS Haswell pin for this run")
    parser.add_argument("--filter", default="", help="--benchmark_filter regex, e.g. 'MoH_H8/.*/T:4096'")
    args = parser.parse_args()

    env = benchmark_env(args.avx512)
    command = [args.bench, "--benchmark_format=json", f"--benchmark_min_time={args.min_time}"]
    if args.repetitions > 1:
        command += [f"--benchmark_repetitions={args.repetitions}", "--benchmark_enable_random_interleaving=true"]
    if args.filter:
        command.append(f"--benchmark_filter={args.filter}")
    report = json.loads(subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout)
    context = report["context"]

    print(f"Float GEMM: {context['float_gemm']}; OpenBLAS kernels: {context['openblas_corename']} "
          f"(OPENBLAS_CORETYPE={context['openblas_coretype_env']}); threads: {context['threads']}; "
          f"min time {args.min_time} s per benchmark, fastest of {args.repetitions}")
    print("time ratio = this config's time / the compared one's; FLOP ratio = the same for the analytic FLOPs under "
          "the routing observed; measured/FLOP = time ratio / FLOP ratio (1.00 = savings fully realised). "
          "Routing shares: MoAS tokens per branch (MHA, GQA-2, MQA; static: 1/3 each), MoH tokens per routed head.")
    print()
    for (family, seq), runs in parse(report).items():
        print_table(family, seq, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
