#!/usr/bin/env python3
"""RustGPT's small calls: one attention-layer step (forward with training + backward + Adam + zero_grad) on one
sequence (B = 1, T = 8, 25, 80; C = 128, H = 8, 4 kv heads), AllHeads and MixtureOfHeads {2 shared + 4 of 6}, at
n_threads = 1 and the default n_threads = 0 (all cores), from bench/bench_small_calls. Prints per shape the two
times and their ratio, the FLOP floor (the step's analytic matrix-product FLOPs at the one-core SGEMM rate measured
in the same run) and the 1-thread time against it, and the same step in PyTorch eager on one thread.

    tools/bench_small_calls.py [--build build] [--bench PATH] [--lib-dir DIR]
                               [--baseline-bench PATH [--baseline-lib-dir DIR]]
                               [--min-time 1] [--rounds 3] [--repetitions 2] [--avx512] [--no-torch]

Every round runs each benchmark binary once (the baseline's first in odd rounds, second in even ones), each with
--repetitions runs per benchmark in random order, then the PyTorch steps; every figure is the fastest run of all
rounds. --baseline-bench runs a second build's bench_small_calls in the same rounds and prints its columns beside,
so before/after comparisons come from one run. --lib-dir DIR puts DIR first on LD_LIBRARY_PATH (the build tree's
RUNPATH yields to it), so one benchmark binary can run against another libmoas.so; the library that actually ran
is printed. --avx512 drops the OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE pin for this run.

Run it with an interpreter that has torch (e.g. /tmp/torchvenv/bin/python) for the PyTorch columns; without torch
they are left out with a message.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_report import benchmark_env  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SEQS = (8, 25, 80)
KINDS = ("AllHeads", "MoH2+4of6")
LABELS = {"AllHeads": "AllHeads", "MoH2+4of6": "MixtureOfHeads {2 + 4 of 6}"}
WIDTH, HEADS, KV_HEADS = 128, 8, 4
LOAD_BALANCE_WEIGHT = 0.01  # moas_layer_config_default's head_selection.load_balance_weight


# ---------------------------------------------------------------------------------------------------------------
# libmoas: the benchmark binaries
# ---------------------------------------------------------------------------------------------------------------

def run_bench(bench, lib_dir, args):
    env = benchmark_env(args.avx512)
    if lib_dir:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (os.path.abspath(lib_dir), env.get("LD_LIBRARY_PATH"))
                                                 if p)
    command = [bench, "--benchmark_format=json", f"--benchmark_min_time={args.min_time}",
               "--benchmark_enable_random_interleaving=true"]
    if args.repetitions > 1:
        command.append(f"--benchmark_repetitions={args.repetitions}")
    if args.filter:
        command.append(f"--benchmark_filter={args.filter}")
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{bench} failed (exit {done.returncode}):\n{done.stderr.strip()}")
    return json.loads(done.stdout)


def keep_fastest(fastest, report):
    for run in report["benchmarks"]:
        if run.get("run_type", "iteration") != "iteration":
            continue
        name = run["run_name"].removesuffix("/real_time")
        if run.get("error_occurred"):
            fastest.setdefault(name, run)
            continue
        if name not in fastest or fastest[name].get("error_occurred") or run["real_time"] < fastest[name]["real_time"]:
            fastest[name] = run


def microseconds(run):
    unit = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}[run.get("time_unit", "ns")]
    return run["real_time"] * unit


# ---------------------------------------------------------------------------------------------------------------
# PyTorch: the same layer step, float32, one thread
# ---------------------------------------------------------------------------------------------------------------

def load_torch():
    try:
        import torch
    except ImportError as e:
        return None, f"PyTorch columns left out: torch is not importable with {sys.executable} ({e})"
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or parallel work already ran
        pass
    return torch, None


class TorchSteps:
    """The layer step of bench_small_calls in PyTorch eager. AllHeads is written here in the layer's own terms (one
    fused [q; k; v] projection of 4 kv heads, no bias as moas_layer_config_default has, causal softmax attention,
    output projection, residual). MixtureOfHeads is tools/reference/gpt.py's MoHAttention on its own, which computes
    every head densely and zeroes the gates of inactive ones (so it does all 8 heads' attention where libmoas does
    6), plus the residual and the load-balance loss at the layer's weight."""

    def __init__(self, torch):
        self.torch = torch
        nn = torch.nn
        sys.path.insert(0, os.path.join(HERE, "reference"))
        from gpt import Config, MoHAttention

        class AllHeadsLayer(nn.Module):
            def __init__(self, max_seq):
                super().__init__()
                d = WIDTH // HEADS
                self.qkv = nn.Linear(WIDTH, WIDTH + 2 * KV_HEADS * d, bias=False)
                self.proj = nn.Linear(WIDTH, WIDTH, bias=False)
                for w in (self.qkv.weight, self.proj.weight):
                    nn.init.normal_(w, 0.0, 0.02)
                # The mask is built once per layer, as an eager model would keep it in a buffer.
                self.register_buffer("future", torch.ones(max_seq, max_seq, dtype=torch.bool).triu(1))

            def forward(self, x):
                B, T, C = x.shape
                d = C // HEADS
                q, k, v = self.qkv(x).split([C, KV_HEADS * d, KV_HEADS * d], dim=-1)
                q = q.view(B, T, HEADS, d).transpose(1, 2)
                k = k.view(B, T, KV_HEADS, d).transpose(1, 2).repeat_interleave(HEADS // KV_HEADS, dim=1)
                v = v.view(B, T, KV_HEADS, d).transpose(1, 2).repeat_interleave(HEADS // KV_HEADS, dim=1)
                att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(d))
                att = att.masked_fill(self.future[:T, :T], float("-inf")).softmax(-1)
                y = (att @ v).transpose(1, 2).reshape(B, T, C)
                return x + self.proj(y), None

        class MoHLayer(nn.Module):
            def __init__(self, max_seq):
                super().__init__()
                cfg = Config(n_embd=WIDTH, n_head=HEADS, n_kv_head=KV_HEADS, block_size=max_seq, dropout=0.0,
                             bias=False, attention="moh",
                             head_selection={"strategy": "mixture", "num_shared_heads": 2,
                                             "num_active_routed_heads": 4, "num_active_heads": 0,
                                             "load_balance_weight": LOAD_BALANCE_WEIGHT, "gates": "reference"})
                self.attn = MoHAttention(cfg, sdpa=False)
                # libmoas skips dropout at p = 0; nn.Dropout(0) in training mode still makes a pass.
                self.attn.attn_dropout = nn.Identity()
                self.attn.resid_dropout = nn.Identity()

            def forward(self, x):
                y, aux = self.attn(x)
                return x + y, aux

        self.makers = {"AllHeads": AllHeadsLayer, "MoH2+4of6": MoHLayer}
        self.cases = {}

    def _case(self, kind, seq):
        if (kind, seq) not in self.cases:
            torch = self.torch
            torch.manual_seed(0)
            layer = self.makers[kind](seq).float().train()
            opt = torch.optim.Adam(layer.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
            n = seq * WIDTH
            i = torch.arange(n, dtype=torch.int64)
            # The inputs bench_small_calls uses, and the same alternating dy.
            x = (((i * 2654435761) % 1000).float() / 500.0 - 1.0).view(1, seq, WIDTH)
            dy = (((i * 40503 + 17) % 1000).float() / 50000.0 - 0.01).view(1, seq, WIDTH)
            self.cases[(kind, seq)] = (layer, opt, x, (dy, -dy))
        return self.cases[(kind, seq)]

    def time(self, kind, seq, min_time):
        """Seconds per step: the mean over at least min_time seconds of steps, after a warm-up."""
        layer, opt, x, dys = self._case(kind, seq)

        def step(flip):
            y, aux = layer(x)
            loss = (y * dys[flip]).sum()
            if aux is not None:
                loss = loss + LOAD_BALANCE_WEIGHT * aux
            loss.backward()
            opt.step()
            opt.zero_grad()

        for k in range(5):
            step(k & 1)
        steps, start = 0, time.perf_counter()
        while True:
            for _ in range(20):
                step(steps & 1)
                steps += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_time:
                return elapsed / steps


# ---------------------------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------------------------

def fmt(value, spec=".1f", suffix=""):
    return "—" if value is None else f"{value:{spec}}{suffix}"


def ratio(a, b):
    return a / b if a is not None and b is not None and b > 0 else None


def step_us(fastest, seq, kind, threads):
    run = fastest.get(f"LayerStep/T{seq}/{kind}/threads{threads}")
    if run is None or run.get("error_occurred"):
        return None
    return microseconds(run)


def cores_busy(fastest, seq, kind):
    """Process CPU time / wall time of the 1-thread and default runs: threads doing work plus workers spinning."""
    busy = [fastest.get(f"LayerStep/T{seq}/{kind}/threads{t}", {}).get("cores_busy") for t in (1, 0)]
    return " / ".join(fmt(b, ".2f") for b in busy)


def describe(label, report):
    c = report["context"]
    lines = [f"{label}: {c.get('libmoas', '?')}",
             f"  library {c.get('libmoas_path', '?')}; oneDNN {c.get('onednn', '(not linked)')}",
             f"  OPENBLAS_CORETYPE={c.get('openblas_coretype')} OPENBLAS_L2_SIZE={c.get('openblas_l2_size')}; "
             f"OpenBLAS core {c.get('openblas_core')} ({c.get('openblas_config', '').strip()})",
             f"  cores {c.get('omp_num_procs')} (n_threads=0 uses them all); OMP_WAIT_POLICY="
             f"{c.get('omp_wait_policy')}; OMP_NUM_THREADS={c.get('omp_num_threads')}; "
             f"host {c.get('host_name')}, {c.get('num_cpus')} CPUs at {c.get('mhz_per_cpu')} MHz, "
             f"load average {c.get('load_avg')}"]
    return "\n".join(lines)


def sgemm_ceiling(fastest):
    """{library: (GFLOP/s, cores_busy)} of the one-thread SGEMMs, and the best rate."""
    rates = {}
    for name, run in fastest.items():
        if name.startswith("Sgemm1/") and not run.get("error_occurred"):
            rates[run.get("label") or name.split("/")[1]] = (run["GFLOP/s"], run.get("cores_busy", float("nan")))
    best = max((r for r, _ in rates.values()), default=None)
    return rates, best


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", default=os.path.join(ROOT, "build"), help="build tree (default: build/)")
    parser.add_argument("--bench", help="bench_small_calls binary (default: BUILD/bench/bench_small_calls)")
    parser.add_argument("--lib-dir", help="directory of the libmoas.so to run against (default: the binary's own)")
    parser.add_argument("--baseline-bench", help="a second build's bench_small_calls, run in the same rounds")
    parser.add_argument("--baseline-lib-dir", help="libmoas.so directory for the baseline binary")
    parser.add_argument("--min-time", default="1", help="seconds per benchmark run (--benchmark_min_time)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all binaries and PyTorch")
    parser.add_argument("--repetitions", type=int, default=2, help="runs per benchmark per round, random order")
    parser.add_argument("--filter", help="--benchmark_filter for the binaries (smoke runs)")
    parser.add_argument("--avx512", action="store_true", help="unset the OpenBLAS Haswell pin for this run")
    parser.add_argument("--no-torch", action="store_true", help="leave out the PyTorch columns")
    parser.add_argument("--torch-min-time", type=float, help="seconds of PyTorch steps per case (default --min-time)")
    args = parser.parse_args()
    bench = args.bench or os.path.join(args.build, "bench", "bench_small_calls")
    binaries = [("this build", bench, args.lib_dir)]
    if args.baseline_bench:
        binaries.insert(0, ("baseline", args.baseline_bench, args.baseline_lib_dir))
    for _, path, _ in binaries:
        if not os.access(path, os.X_OK):
            sys.exit(f"{path} is not an executable benchmark: build the bench_small_calls target, or pass --bench")

    torch, why_not = (None, "PyTorch columns left out: --no-torch") if args.no_torch else load_torch()
    torch_steps = TorchSteps(torch) if torch else None
    torch_min_time = args.torch_min_time if args.torch_min_time is not None else float(args.min_time)

    fastest = {label: {} for label, _, _ in binaries}
    reports = {}
    torch_best = {}
    started = time.time()
    for r in range(args.rounds):
        order = binaries if r % 2 == 0 else binaries[::-1]
        for label, path, lib_dir in order:
            report = run_bench(path, lib_dir, args)
            reports[label] = report
            keep_fastest(fastest[label], report)
        if torch_steps:
            for seq in SEQS:
                for kind in KINDS:
                    t = torch_steps.time(kind, seq, torch_min_time) * 1e6
                    torch_best[(kind, seq)] = min(t, torch_best.get((kind, seq), t))
        print(f"round {r + 1}/{args.rounds} done ({time.time() - started:.0f} s)", file=sys.stderr, flush=True)

    main_label = binaries[-1][0]
    main_fastest = fastest[main_label]
    rates, best_rate = sgemm_ceiling(main_fastest)
    base = fastest.get("baseline")

    for label, _, _ in binaries:
        print(describe(label, reports[label]))
    print(f"fastest of {args.rounds} rounds x {args.repetitions} runs, {args.min_time} s each")
    context = reports[main_label]["context"]
    load = (context.get("load_avg") or [0])[0]
    if load > 0.5 * context.get("num_cpus", 1):
        print(f"WARNING: load average {load:.1f} on {context.get('num_cpus')} CPUs when the last run started: "
              "this machine is not quiet, so the default (all cores) column measures the contention too")
    if rates:
        parts = [f"{lib} {gf:.1f} GFLOP/s (cores busy {busy:.2f})" for lib, (gf, busy) in sorted(rates.items())]
        print("one-thread SGEMM 1024^3 (this build's run): " + ", ".join(parts) +
              f"; FLOP floor uses the best, {best_rate:.1f} GFLOP/s")
        if any(busy > 1.2 for _, busy in rates.values()):
            print("WARNING: an SGEMM ran on more than one core, so its rate is no one-core ceiling")
    else:
        print("no SGEMM ceiling in this run (filtered out?): FLOP floor left out")
    if torch:
        print(f"PyTorch {torch.__version__} eager, float32, torch.get_num_threads()={torch.get_num_threads()}; "
              f"fastest of {args.rounds} rounds of >= {torch_min_time:g} s; Adam(0.9, 0.999, eps 1e-8); "
              "MixtureOfHeads is tools/reference/gpt.py's dense MoHAttention (all 8 heads computed)")
    else:
        print(why_not)
    print()

    head = ["shape", "kind"]
    if base is not None:
        head += ["baseline n_threads=1 us", "baseline default us", "baseline default/1"]
    head += ["n_threads=1 us", "default us", "default/1 ratio"]
    if base is not None:
        head += ["1-thread this/baseline", "default this/baseline"]
    head += ["FLOP floor us", "1-thread / floor"]
    if torch:
        head += ["PyTorch eager 1-thread us", "libmoas/PyTorch (1 thread)"]
    head += ["cores busy (1 / default)"] + (["baseline cores busy"] if base is not None else [])
    print("| " + " | ".join(head) + " |")
    print("|---|---|" + "---:|" * (len(head) - 2))
    errors = []
    for seq in SEQS:
        for kind in KINDS:
            one, default = step_us(main_fastest, seq, kind, 1), step_us(main_fastest, seq, kind, 0)
            run = main_fastest.get(f"LayerStep/T{seq}/{kind}/threads1")
            if run is None:
                continue
            for name in (f"LayerStep/T{seq}/{kind}/threads1", f"LayerStep/T{seq}/{kind}/threads0"):
                if main_fastest.get(name, {}).get("error_occurred"):
                    errors.append(f"{name}: {main_fastest[name].get('error_message')}")
            row = [f"B=1 T={seq} C={WIDTH} H={HEADS} kv={KV_HEADS}", LABELS[kind]]
            if base is not None:
                b1, b0 = step_us(base, seq, kind, 1), step_us(base, seq, kind, 0)
                row += [fmt(b1), fmt(b0), fmt(ratio(b0, b1), ".2f", "x")]
            row += [fmt(one), fmt(default), fmt(ratio(default, one), ".2f", "x")]
            if base is not None:
                row += [fmt(ratio(one, b1), ".2f", "x"), fmt(ratio(default, b0), ".2f", "x")]
            floor = run["flops"] / (best_rate * 1e9) * 1e6 if best_rate else None
            row += [fmt(floor, ".2f"), fmt(ratio(one, floor), ".1f", "x")]
            if torch:
                pt = torch_best.get((kind, seq))
                row += [fmt(pt), fmt(ratio(one, pt), ".2f", "x")]
            row.append(cores_busy(main_fastest, seq, kind))
            if base is not None:
                row.append(cores_busy(base, seq, kind))
            print("| " + " | ".join(row) + " |")
    print()
    print("default = n_threads 0 (all cores). FLOP floor = the step's matrix-product FLOPs (keys and values of "
          "every token; queries, output projection and causal QK^T, PV of the active heads only; MoH routers; "
          "backward 2x forward; formula in bench/bench_small_calls.cpp) / the best one-thread SGEMM rate; Adam, "
          "softmax and gates are not in it. libmoas/PyTorch < 1 means libmoas is faster. cores busy = process CPU "
          "time / wall time (about 1 on one thread; spinning OpenMP workers raise it).")
    for e in errors:
        print(f"ERROR {e}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
