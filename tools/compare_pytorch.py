#!/usr/bin/env python3
"""Side by side in one run: training-step throughput of the paper's model (6 layers, 6 heads, 384 wide, T=256,
B=12, vocab 65, dropout 0.2, AdamW) in libmoas and in PyTorch eager, on the CPU (same threads) or on a CUDA GPU
(--device cuda: libmoas's CUDA model against PyTorch on the same GPU, both in full fp32 with TF32 off, or with
--precision tf32 / bf16: libmoas's matmul_precision against PyTorch's TF32 matmuls / bf16 autocast), same shapes, for
MHA, GQA-2, MQA, MoAS (static, soft, top-1; branches MHA/GQA-2/MQA) and MoH (2 shared + 2 of 4 routed heads, and
StaticPruning 4; with 8 heads, MoH at 75% beside AllHeads). PyTorch runs the independent model of
tools/reference/gpt.py with explicit attention (the reference code's way) and with scaled_dot_product_attention; its
MoAS load-balance loss comes from the same forward (the published MoAS code runs a second forward for it, which would
make PyTorch slower still).

    tools/compare_pytorch.py [--lib build/libmoas.so] [--steps 10] [--threads 2] [--device cpu|cuda]
                             [--precision fp32|tf32|bf16] [--only "MoAS soft" MHA]

Needs torch (not installed by CI). Prints tokens/s and the libmoas / PyTorch ratios.
"""
import argparse
import ctypes
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "reference"))
from gpt import GPT, Config  # noqa: E402


class HeadSelection(ctypes.Structure):  # mirrors moas_head_selection
    _fields_ = [(n, ctypes.c_int32) for n in ("strategy", "num_shared_heads", "num_active_routed_heads",
                                               "num_active_heads")] + [
        ("load_balance_weight", ctypes.c_float), ("gate_variant", ctypes.c_int32)]


class ModelConfig(ctypes.Structure):  # mirrors moas_model_config for this script only
    _fields_ = [("struct_size", ctypes.c_uint32), ("abi_version", ctypes.c_uint32)] + [
        (n, ctypes.c_int32) for n in ("vocab_size", "block_size", "n_layer", "n_head", "n_kv_head", "n_embd",
                                      "mlp_hidden", "norm", "mlp", "position", "attention", "bias")] + [
        ("dropout", ctypes.c_float), ("attn_dropout", ctypes.c_int32), ("rope_base", ctypes.c_float),
        ("seed", ctypes.c_uint64), ("n_threads", ctypes.c_int32), ("device", ctypes.c_int32),
        ("device_index", ctypes.c_int32), ("reserved0", ctypes.c_int32), ("moas_mode", ctypes.c_int32),
        ("moas_n_branches", ctypes.c_int32), ("moas_branch_kv_heads", ctypes.c_int32 * 4),
        ("moas_aux_weight", ctypes.c_float), ("head_selection", HeadSelection), ("reserved1", ctypes.c_int32),
        ("cope_max_pos", ctypes.c_int32), ("window_size", ctypes.c_int32), ("matmul_precision", ctypes.c_int32),
        ("reserved2", ctypes.c_int32)]

PRECISIONS = {"fp32": 0, "tf32": 1, "bf16": 2}  # MOAS_MATMUL_*


# name: (libmoas config edits, gpt.py Config keywords)
VARIANTS = {
    "MHA": ({}, {}),
    "GQA-2": ({"n_kv_head": 2}, {"n_kv_head": 2}),
    "MQA": ({"n_kv_head": 1}, {"n_kv_head": 1}),
    "MoAS static": ({"attention": 1, "moas_mode": 0}, {"attention": "moas", "moas_mode": "static"}),
    "MoAS soft": ({"attention": 1, "moas_mode": 1}, {"attention": "moas", "moas_mode": "soft"}),
    "MoAS top1": ({"attention": 1, "moas_mode": 2}, {"attention": "moas", "moas_mode": "top1"}),
    "MoH 2+2/4": ({"attention": 2, "heads": (1, 2, 2, 0)},
                  {"attention": "moh", "head_selection": {"strategy": "mixture", "num_shared_heads": 2,
                                                          "num_active_routed_heads": 2, "num_active_heads": 0,
                                                          "load_balance_weight": 0.01, "gates": "reference"}}),
    "Pruning 4": ({"attention": 2, "heads": (2, 0, 0, 4)},
                  {"attention": "moh", "head_selection": {"strategy": "static_pruning", "num_shared_heads": 0,
                                                          "num_active_routed_heads": 0, "num_active_heads": 4,
                                                          "load_balance_weight": 0.01, "gates": "reference"}}),
    # 8 heads of 48: MoH with 75% of the heads active per token beside all of them.
    "AllHeads H8": ({"n_head": 8, "n_kv_head": 8}, {"n_head": 8, "n_kv_head": 8}),
    "MoH 75% H8": ({"n_head": 8, "n_kv_head": 8, "attention": 2, "heads": (1, 2, 4, 0)},
                   {"n_head": 8, "n_kv_head": 8, "attention": "moh",
                    "head_selection": {"strategy": "mixture", "num_shared_heads": 2, "num_active_routed_heads": 4,
                                       "num_active_heads": 0, "load_balance_weight": 0.01, "gates": "reference"}}),
}


class AdamWConfig(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32)] + [
        (n, ctypes.c_float) for n in ("lr", "beta1", "beta2", "eps", "weight_decay", "grad_clip")]


def time_libmoas(lib, edits, batch, seq, steps, threads, device, precision):
    def check(status):
        if status != 0:
            raise RuntimeError(lib.moas_last_error().decode())
    lib.moas_last_error.restype = ctypes.c_char_p
    cfg = ModelConfig(struct_size=ctypes.sizeof(ModelConfig))
    check(lib.moas_model_config_default(ctypes.byref(cfg)))
    cfg.n_threads = threads
    cfg.device = 1 if device == "cuda" else 0
    cfg.matmul_precision = PRECISIONS[precision]
    for key, value in edits.items():
        if key == "heads":
            hs = cfg.head_selection
            hs.strategy, hs.num_shared_heads, hs.num_active_routed_heads, hs.num_active_heads = value
        else:
            setattr(cfg, key, value)
    model = ctypes.c_void_p()
    check(lib.moas_model_create(ctypes.byref(cfg), ctypes.byref(model)))
    adamw = AdamWConfig(struct_size=ctypes.sizeof(AdamWConfig))
    check(lib.moas_adamw_config_default(ctypes.byref(adamw)))
    n = batch * seq
    g = torch.Generator().manual_seed(0)
    tokens = (ctypes.c_int32 * n)(*torch.randint(0, 65, (n,), generator=g).tolist())
    targets = (ctypes.c_int32 * n)(*torch.randint(0, 65, (n,), generator=g).tolist())
    loss = ctypes.c_float()

    def step():
        check(lib.moas_zero_grad(model))
        check(lib.moas_forward(model, tokens, targets, batch, seq, 1, ctypes.byref(loss), None))
        check(lib.moas_backward(model))
        check(lib.moas_optimizer_step(model, ctypes.byref(adamw), None))
    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    elapsed = time.perf_counter() - start
    lib.moas_model_destroy(model)
    return n * steps / elapsed


def time_torch(kw, batch, seq, steps, sdpa, device, precision):
    cfg = Config(dropout=0.2, **kw)
    model = GPT(cfg, sdpa=sdpa).float().to(device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
    x = torch.randint(0, 65, (batch, seq), device=device)
    y = torch.randint(0, 65, (batch, seq), device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=precision == "bf16"):
            _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return batch * seq * steps / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lib", default=os.path.join(os.path.dirname(HERE), "build", "libmoas.so"))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--precision", choices=tuple(PRECISIONS), default="fp32",
                        help="CUDA only: libmoas's matmul_precision; PyTorch's TF32 matmuls or bf16 autocast")
    parser.add_argument("--only", nargs="*", help="variants to run (default: all)")
    args = parser.parse_args()
    if args.precision != "fp32" and args.device != "cuda":
        parser.error("--precision tf32 / bf16 is for --device cuda (the CPU computes in fp32)")
    torch.set_num_threads(args.threads)
    # fp32: both sides keep every product in fp32 (TF32 off); tf32: both let tensor cores round the inputs.
    torch.backends.cuda.matmul.allow_tf32 = args.precision == "tf32"
    torch.backends.cudnn.allow_tf32 = args.precision == "tf32"
    lib = ctypes.CDLL(args.lib)
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"threads {args.threads}"
    print(f"{where}; torch {torch.__version__}; OPENBLAS_CORETYPE="
          f"{os.environ.get('OPENBLAS_CORETYPE', '(unset)')}; B=12, T=256, paper model, dropout 0.2, AdamW; "
          f"{args.precision} products")
    print(f"| {'attention':<11} | {'libmoas tok/s':>13} | {'torch eager':>11} | {'torch SDPA':>10} | {'vs eager':>8} "
          f"| {'vs SDPA':>7} |")
    print("|" + "|".join("-" * w for w in (13, 15, 13, 12, 10, 9)) + "|")
    for name, (edits, kw) in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        try:
            ours = time_libmoas(lib, edits, 12, 256, args.steps, args.threads, args.device, args.precision)
        except RuntimeError as e:  # e.g. an attention kind the CUDA model does not run yet
            print(f"| {name:<11} | not run: {e} |", flush=True)
            continue
        eager = time_torch(kw, 12, 256, args.steps, False, args.device, args.precision)
        sdpa = time_torch(kw, 12, 256, args.steps, True, args.device, args.precision)
        print(f"| {name:<11} | {ours:>13.0f} | {eager:>11.0f} | {sdpa:>10.0f} | {ours / eager:>7.2f}x "
              f"| {ours / sdpa:>6.2f}x |", flush=True)


if __name__ == "__main__":
    main()
