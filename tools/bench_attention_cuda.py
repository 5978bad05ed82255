#!/usr/bin/env python3
"""The CUDA attention kernels beside PyTorch's scaled_dot_product_attention on the same GPU, in one run: causal
attention forward + backward, 8 heads, T = 1k .. 16k, head_dim 64 and 128, same batch as bench_cuda, TFLOP/s counted
causally the same way for both. PyTorch runs fp32 (its efficient-attention kernel: the like-for-like comparison,
libmoas's kernels are fp32) and bf16 (flash / cuDNN: the speed a mixed-precision user would get).

    tools/bench_attention_cuda.py [--bench build/bench/bench_cuda] [--repeats 20]

Needs torch with CUDA and a GPU (not in CI).
"""
import argparse
import json
import os
import subprocess
import time

import torch
import torch.nn.functional as F


def torch_tflops(B, H, T, d, dtype, repeats):
    q, k, v = (torch.randn(B, H, T, d, device="cuda", dtype=dtype, requires_grad=True) for _ in range(3))
    grad = torch.randn(B, H, T, d, device="cuda", dtype=dtype)

    def step():
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        out.backward(grad)
    step()
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
    print("| T | d | B | libmoas fp32 TFLOP/s | torch SDPA fp32 | ratio | torch SDPA bf16 | ratio |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for run in report["benchmarks"]:
        if "error_message" in run:
            print(f"| {run['name']} | skipped: {run['error_message']} |")
            continue
        _, T, d = run["name"].split("/")[:3]
        T, d, B = int(T), int(d), int(run["B"])
        ours = run["TFLOP/s"]
        fp32 = torch_tflops(B, 8, T, d, torch.float32, args.repeats)
        bf16 = torch_tflops(B, 8, T, d, torch.bfloat16, args.repeats)
        print(f"| {T} | {d} | {B} | {ours:.1f} | {fp32:.1f} | {ours / fp32:.2f} | {bf16:.1f} | {ours / bf16:.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
