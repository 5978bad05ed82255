#!/usr/bin/env python3
"""Runs bench_train_step (JSON output) and prints tokens/s and the matrix-product FLOP rate as fractions of the
SGEMM ceiling measured in the same run and of the theoretical fp32 peak.

    tools/bench_report.py [--bench build/bench/bench_train_step] [--avx512]

--avx512 drops the OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE pin for this run, so OpenBLAS picks its AVX-512 kernels.
"""
import argparse
import json
import os
import subprocess
import sys


def benchmark_env(avx512):
    """The environment for a benchmark run: the machines' OpenBLAS pin (as tools/env.sh sets it), or with --avx512
    none, so OpenBLAS picks its AVX-512 kernels."""
    env = dict(os.environ)
    if avx512:
        env.pop("OPENBLAS_CORETYPE", None)
        env.pop("OPENBLAS_L2_SIZE", None)
    else:
        env.setdefault("OPENBLAS_CORETYPE", "Haswell")
        env.setdefault("OPENBLAS_L2_SIZE", "2097152")
    return env


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser.add_argument("--bench", default=os.path.join(root, "build", "bench", "bench_train_step"))
    parser.add_argument("--avx512", action="store_true", help="unset the OpenBLAS Haswell pin for this run")
    parser.add_argument("--min-time", default="5")
    args = parser.parse_args()

    out = subprocess.run([args.bench, "--benchmark_format=json"], env=benchmark_env(args.avx512), check=True, capture_output=True,
                         text=True).stdout
    report = json.loads(out)
    context = report["context"]
    peak = float(context["theoretical_fp32_peak_GFLOP/s"])
    rows = {b["name"]: b for b in report["benchmarks"]}
    ceilings = {b.get("label", name): b["GFLOP/s"] for name, b in rows.items() if name.startswith("BM_Sgemm")}
    sgemm = max(ceilings.values())

    print(f"OpenBLAS kernels: {context['openblas_coretype']}; threads: {context['threads']}")
    print("SGEMM 2048^3 in this run: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in ceilings.items()))
    print(f"SGEMM ceiling (the best of those): {sgemm:.0f} GFLOP/s; "
          f"theoretical fp32 peak: {peak:.0f} GFLOP/s ({sgemm / peak:.0%} of it)")
    print()
    print(f"{'model':<6} {'tok/s':>8} {'step ms':>8} {'matmul GFLOP/s':>15} {'of SGEMM':>9} {'of peak':>8}")
    for name, b in rows.items():
        if not name.startswith("BM_TrainStep"):
            continue
        rate = b["matmul_GFLOP/s"]
        print(f"{b.get('label', name):<6} {b['tok/s']:>8.0f} {b['real_time']:>8.1f} {rate:>15.1f} "
              f"{rate / sgemm:>9.0%} {rate / peak:>8.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
