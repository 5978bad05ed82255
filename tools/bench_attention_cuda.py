#!/usr/bin/env python3
"""The CUDA attention kernels beside PyTorch's scaled_dot_product_attention on the same GPU, in one run: causal
attention forward + backward, 8 heads, T = 1k .. 16k, head_dim 64 and 128, same batch as bench_cuda, TFLOP/s counted
causally the same way for both. libmoas runs its fp32 kernels (matmul precision FP32) and its bfloat16 tensor-core
kernels (BF16); PyTorch runs fp32 (its efficient-attention kernel, beside libmoas fp32) and bf16 (beside libmoas
bf16), first with the backend PyTorch picks, then with cuDNN and with flash forced. A backend that cannot run a
shape shows n/a. The last line checks the issue's target, dense attention at >= 70% of cuDNN SDPA: libmoas bf16
against the cuDNN bf16 column.

    tools/bench_attention_cuda.py [--bench build/bench/bench_cuda] [--repeats 20]

Needs torch >= 2.3 with CUDA and a GPU (not in CI).
"""
import argparse
import contextlib
import json
import os
import subprocess
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

# (column, dtype, backend forced on SDPA; None leaves the choice to PyTorch)
TORCH_RUNS = [
    ("torch SDPA fp32", torch.float32, None),
    ("torch SDPA bf16", torch.bfloat16, None),
    ("cuDNN bf16", torch.bfloat16, SDPBackend.CUDNN_ATTENTION),
    ("flash bf16", torch.bfloat16, SDPBackend.FLASH_ATTENTION),
]
TARGET_COLUMN, TARGET_RATIO = "cuDNN bf16", 0.70
PRECISIONS = {0: "fp32", 2: "bf16"}  # bench_cuda's third argument: MOAS_MATMUL_FP32, MOAS_MATMUL_BF16


def torch_tflops(B, H, T, d, dtype, backend, repeats):
    """TFLOP/s of SDPA forward + backward, or None where the forced backend cannot run this shape."""
    q, k, v = (torch.randn(B, H, T, d, device="cuda", dtype=dtype, requires_grad=True) for _ in range(3))
    grad = torch.randn(B, H, T, d, device="cuda", dtype=dtype)

    def step():
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        out.backward(grad)
    with sdpa_kernel(backend) if backend is not None else contextlib.nullcontext():
        # A forced backend that cannot run the shape (or this GPU) raises "No available kernel" on the first call.
        try:
            step()
        except RuntimeError:
            return None
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            step()
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / repeats
    return 2.0 * 7 * B * H * T * (T + 1) / 2 * d / seconds / 1e12


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser.add_argument("--bench", default=os.path.join(root, "build", "bench", "bench_cuda"))
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    report = json.loads(subprocess.run([args.bench, "--benchmark_filter=BM_Attention", "--benchmark_format=json"],
                                       check=True, capture_output=True, text=True).stdout)
    print(f"{torch.cuda.get_device_name()}; torch {torch.__version__}; causal, 8 heads, fwd + bwd")
    ours, shapes = {}, []  # (T, d) -> {"fp32": TFLOP/s, "bf16": TFLOP/s}
    for run in report["benchmarks"]:
        if "error_message" in run:
            print(f"{run['name']}: skipped: {run['error_message']}")
            continue
        T, d, precision = (int(x) for x in run["name"].split("/")[1:4])
        if (T, d) not in ours:
            shapes.append((T, d, int(run["B"])))
        ours.setdefault((T, d), {})[PRECISIONS[precision]] = run["TFLOP/s"]
    if not shapes:
        return
    print("| T | d | B | libmoas fp32 | libmoas bf16 | " + " | ".join(f"{name} | ratio" for name, _, _ in TORCH_RUNS) +
          " |")
    print("|---:|---:|---:|---:|---:|" + "---:|---:|" * len(TORCH_RUNS))
    target_ratios = []
    for T, d, B in shapes:
        mine = ours[(T, d)]
        cells = []
        for name, dtype, backend in TORCH_RUNS:
            theirs = torch_tflops(B, 8, T, d, dtype, backend, args.repeats)
            own = mine.get("fp32" if dtype == torch.float32 else "bf16")
            cells.append("n/a | n/a" if theirs is None or own is None else f"{theirs:.1f} | {own / theirs:.2f}")
            if name == TARGET_COLUMN and theirs is not None and own is not None:
                target_ratios.append((own / theirs, T, d))
        shown = " | ".join(f"{mine[p]:.1f}" if p in mine else "n/a" for p in ("fp32", "bf16"))
        print(f"| {T} | {d} | {B} | {shown} | " + " | ".join(cells) + " |", flush=True)
    target = f"target: dense attention >= {TARGET_RATIO:.0%} of cuDNN SDPA (libmoas bf16 / {TARGET_COLUMN})"
    if not target_ratios:
        print(f"{target}: not measured (no shape ran on both)")
        return
    met = sum(ratio >= TARGET_RATIO for ratio, _, _ in target_ratios)
    worst, T, d = min(target_ratios)
    print(f"{target}: met at {met} of {len(target_ratios)} shapes; lowest {worst:.2f} at T={T}, d={d}")


if __name__ == "__main__":
    main()
