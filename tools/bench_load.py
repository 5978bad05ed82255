#!/usr/bin/env python3
"""Training under load: how much slower libmoas gets when other processes keep the cores busy, against the limit
1.5 (k + 1) for k busy processes per core (fair sharing alone would give k + 1). Workloads:

  moas train       the CLI's default tiny run (--steps 60; the default 2500 is too long to repeat), whole process
  libmoas paper    the paper-shape training step (6 layers, 6 heads, 384 wide, T = 256, B = 12, dropout 0.2,
                   AdamW) through the Python bindings: mean seconds per step after a warm-up step
  PyTorch paper    the same step in PyTorch eager (tools/compare_pytorch.py's model and optimiser), same threads;
                   only when torch is importable

    tools/bench_load.py [--build build] [--bindings bindings/python] [--threads 0|1|2] [--loads 0 1 3]
                        [--budget 1800] [--paper-steps 3] [--train-steps 60] [--repeats 1]
                        [--only train paper torch] [--avx512]

For each k the script starts k * cores busy loops itself, each `timeout N sh -c 'while :; do :; done'` with N the
longest the phase may last (each workload capped at twice its limit times its quiet time, plus a margin; never past
--budget), so every loop ends by itself even if this script is killed; it records their PIDs and ends only those,
at the end of each phase and on any exit. Workloads run under `timeout` too. A run stopped at its cap is a FAIL; a
cell the budget or an early end of the loops cut short is INCOMPLETE. The quiet phase runs first.
--threads is libmoas's n_threads (0 = all cores) and PyTorch's thread count (0 = all cores). Run it with an
interpreter that has torch (e.g. /tmp/torchvenv/bin/python) for the PyTorch rows.
"""
import argparse
import atexit
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from bench_report import benchmark_env  # noqa: E402

PAPER = dict(batch=12, seq=256)
WORKLOADS = ("train", "paper", "torch")
LABELS = {"train": "moas train (default tiny run, --steps {steps}), whole process",
          "paper": "libmoas paper step (bindings), s/step",
          "torch": "PyTorch eager paper step, s/step"}


def cores():
    return len(os.sched_getaffinity(0))


# ---------------------------------------------------------------------------------------------------------------
# Busy loops
# ---------------------------------------------------------------------------------------------------------------

class BusyLoops:
    """k busy loops per core while the `with` block runs. Each is bounded by `timeout` itself, so none outlives
    `seconds` even if this process dies without cleaning up; on leaving the block only these PIDs are ended."""

    live = []  # every loop started and not yet reaped, for the exit handlers

    def __init__(self, per_core, seconds):
        self.count, self.seconds, self.procs = per_core * cores(), max(1, int(seconds)), []

    def __enter__(self):
        for _ in range(self.count):
            p = subprocess.Popen(["timeout", "-k", "2", str(self.seconds), "sh", "-c", "while :; do :; done"],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.procs.append(p)
            BusyLoops.live.append(p)
        time.sleep(0.5 if self.procs else 0)  # let the scheduler see them before the timing starts
        return self

    def all_running(self):
        return all(p.poll() is None for p in self.procs)

    def pids(self):
        return [p.pid for p in self.procs]

    def __exit__(self, *exc):
        stop(self.procs)


def stop(procs):
    """Ends the given loops: SIGTERM to each `timeout` (it passes the signal on to its shell), then SIGKILL."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.time() + 3
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        if p in BusyLoops.live:
            BusyLoops.live.remove(p)


def stop_all_on_exit():
    atexit.register(lambda: stop(list(BusyLoops.live)))

    def handler(signum, frame):
        stop(list(BusyLoops.live))
        sys.exit(128 + signum)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, handler)


# ---------------------------------------------------------------------------------------------------------------
# Workers: the paper step in a child process, so each measurement starts clean and can be bounded
# ---------------------------------------------------------------------------------------------------------------

def worker_libmoas(args):
    sys.path.insert(0, args.bindings)
    import random
    import moas
    rng = random.Random(0)
    b, t = PAPER["batch"], PAPER["seq"]
    tokens = [[rng.randrange(65) for _ in range(t)] for _ in range(b)]
    targets = [[rng.randrange(65) for _ in range(t)] for _ in range(b)]
    with moas.Model(n_threads=args.threads) as model:  # the defaults are the paper's model

        def step():
            model.zero_grad()
            model.forward(tokens, targets, training=True)
            model.backward()
            model.step()  # AdamW with the library defaults: betas 0.9/0.99, wd 0.1, clip 1

        step()
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        seconds = (time.perf_counter() - start) / args.steps
        print(json.dumps({"seconds": seconds, "info": moas.build_info(), "library": moas.library_path()}))


def worker_torch(args):
    import torch
    from compare_pytorch import time_torch
    torch.set_num_threads(args.threads if args.threads > 0 else cores())
    b, t = PAPER["batch"], PAPER["seq"]
    tokens_per_s = time_torch({}, b, t, args.steps, False, "cpu", "fp32")  # one warm-up step, then args.steps
    print(json.dumps({"seconds": b * t / tokens_per_s,
                      "info": f"torch {torch.__version__}, {torch.get_num_threads()} threads"}))


# ---------------------------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------------------------

class Budget:
    def __init__(self, seconds):
        self.end = time.time() + seconds

    def left(self):
        return max(0.0, self.end - time.time())


def measure(workload, args, env, timeout):
    """(seconds, info, process seconds) of one run of `workload`, or (None, why, None)."""
    if timeout < 1:
        return None, "budget spent", None
    if workload == "train":
        out = tempfile.mkdtemp(prefix="moas_load_")
        command = [args.moas, "train", "--out", out, "--overwrite", "--steps", str(args.train_steps),
                   "--threads", str(args.threads)]
    else:
        out = None
        command = [sys.executable, os.path.abspath(__file__), "--worker", "libmoas" if workload == "paper" else "torch",
                   "--threads", str(args.threads), "--paper-steps", str(args.paper_steps), "--build", args.build,
                   "--bindings", args.bindings]
    # `timeout` bounds the workload too if this script is killed; the subprocess timeout is the same bound here.
    command = ["timeout", "-k", "5", str(max(1, int(timeout))), *command]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout + 10)
    except subprocess.TimeoutExpired:
        return None, f"over {timeout:.0f} s", None
    finally:
        if out:
            subprocess.run(["rm", "-rf", out])
    elapsed = time.perf_counter() - start
    if done.returncode in (124, 137):
        return None, f"over {timeout:.0f} s", None
    if done.returncode != 0:
        last = ((done.stderr or done.stdout).strip().splitlines() or [""])[-1]
        return None, f"exit {done.returncode}: {last[:100]}" + ("..." if len(last) > 100 else ""), None
    if workload == "train":
        first = (done.stdout.strip().splitlines() or [""])[0]  # "moas train: libmoas ...; float GEMM ...; threads"
        return elapsed, first, elapsed
    result = json.loads(done.stdout.strip().splitlines()[-1])
    info = result.get("info", "") + (f" ({result['library']})" if "library" in result else "")
    return result["seconds"], info, elapsed


def torch_importable():
    try:
        import torch  # noqa: F401
        return True, None
    except ImportError as e:
        return False, f"PyTorch rows left out: torch is not importable with {sys.executable} ({e})"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", default=os.path.join(ROOT, "build"), help="build tree (default: build/)")
    parser.add_argument("--threads", type=int, default=0, help="libmoas n_threads / torch threads; 0 = all cores")
    parser.add_argument("--loads", type=int, nargs="+", default=[0, 1, 3], help="busy loops per core (0 = quiet)")
    parser.add_argument("--budget", type=float, default=1800, help="seconds for the whole run, busy loops included")
    parser.add_argument("--paper-steps", type=int, default=3, help="timed paper-shape steps (after one warm-up)")
    parser.add_argument("--train-steps", type=int, default=60, help="moas train --steps")
    parser.add_argument("--repeats", type=int, default=1, help="runs per workload and load; the fastest is kept")
    parser.add_argument("--only", nargs="+", choices=WORKLOADS, help="workloads to run (default: all)")
    parser.add_argument("--avx512", action="store_true", help="unset the OpenBLAS Haswell pin for this run")
    parser.add_argument("--bindings", default=os.path.join(ROOT, "bindings", "python"),
                        help="the Python package `moas` matching --build's library (default: this tree's)")
    parser.add_argument("--worker", choices=("libmoas", "torch"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.build, args.bindings = os.path.abspath(args.build), os.path.abspath(args.bindings)
    args.steps = args.paper_steps
    if args.worker == "libmoas":
        return worker_libmoas(args)
    if args.worker == "torch":
        return worker_torch(args)

    args.moas = os.path.join(args.build, "apps", "moas", "moas")
    library = os.path.join(args.build, "libmoas.so")
    env = benchmark_env(args.avx512)
    env["MOAS_LIBRARY"] = library  # the bindings load this build's library, not an installed one
    workloads = list(args.only or WORKLOADS)
    has_torch, why_not = torch_importable()
    if "torch" in workloads and not has_torch:
        workloads.remove("torch")
    if "train" in workloads and not os.access(args.moas, os.X_OK):
        sys.exit(f"{args.moas} is missing: build the moas_cli target, or pass --build")
    if "paper" in workloads and not os.path.exists(library):
        sys.exit(f"{library} is missing: build the moas target, or pass --build")
    loads = sorted(set(args.loads))
    if 0 not in loads:
        loads.insert(0, 0)  # slowdowns are against the quiet time

    stop_all_on_exit()
    budget = Budget(args.budget)
    results = {}  # (workload, k) -> (seconds or None, note)
    infos = {}
    quiet_process = {}  # workload -> the longest quiet run, whole process
    loadavg = {}  # k -> the 1-minute load average as the phase began (its own loops not yet counted)

    def cap(w, k):
        """(seconds, set by the budget): the longest a run of w may take under load k, twice its limit (clearly a
        FAIL; longer only spends the budget), or what is left of the budget when that is less or there is no quiet
        time to scale."""
        quiet = quiet_process.get(w)  # the whole process, start-up and warm-up included, not the per-step figure
        if k == 0 or quiet is None:
            return budget.left(), True
        by_limit = 30 + 2 * 1.5 * (k + 1) * quiet
        return (by_limit, False) if by_limit < budget.left() else (budget.left(), True)

    for k in loads:
        # Long enough for every run of the phase at its cap, and never past the budget: the loops end by themselves
        # then, even if this script is killed.
        phase = min(budget.left(), 10 + sum(cap(w, k)[0] * args.repeats for w in workloads))
        with BusyLoops(k, phase) as loops:
            print(f"load k={k}: {len(loops.pids())} busy loops (PIDs {loops.pids()})" if k else "quiet",
                  file=sys.stderr, flush=True)
            loadavg[k] = os.getloadavg()[0]
            for w in workloads:
                best, note = None, None
                # The quiet time divides every slowdown: a slow outlier there would hide one, so it gets two tries.
                for _ in range(max(2, args.repeats) if k == 0 else args.repeats):
                    limit, by_budget = cap(w, k)
                    seconds, info, process = measure(w, args, env, limit)
                    if seconds is None:
                        note = f"budget ran out ({info})" if by_budget and info.startswith("over") else info
                        break
                    infos.setdefault(w, info)
                    if k == 0:
                        quiet_process[w] = max(process, quiet_process.get(w, 0.0))
                    best = seconds if best is None else min(best, seconds)
                if best is not None and k and not loops.all_running():
                    note = "busy loops ended early (budget): not a loaded figure"
                results[(w, k)] = (best, note)
                shown = f"{best:.3f} s" if best is not None else f"not measured ({note})"
                print(f"  {w}: {shown}", file=sys.stderr, flush=True)

    print(f"threads: {args.threads} ({'all ' + str(cores()) if args.threads == 0 else 'fixed'}) of {cores()} cores; "
          f"OPENBLAS_CORETYPE={env.get('OPENBLAS_CORETYPE', '(unset)')}; "
          f"OMP_WAIT_POLICY={env.get('OMP_WAIT_POLICY', '(unset)')}; build {args.build}")
    for w, info in infos.items():
        if info:
            print(f"{w}: {info}")
    if not has_torch:
        print(why_not)
    print(f"busy loops: `timeout N sh -c 'while :; do :; done'`, k per core; limit 1.5 (k + 1); "
          f"fastest of {args.repeats} per loaded cell, of {max(2, args.repeats)} quiet")
    print("1-minute load average as each phase began: " +
          ", ".join(f"k={k}: {a:.1f}" for k, a in loadavg.items()))
    if loadavg.get(0, 0) > 0.5 * cores():
        print(f"WARNING: the quiet phase began at load average {loadavg[0]:.1f} on {cores()} cores: other processes "
              "were running, so the quiet times (and the slowdowns against them) are not clean")
    print()
    loaded = [k for k in loads if k]
    head = ["workload", "quiet time"]
    for k in loaded:
        head += [f"k={k} time", f"k={k} slowdown (limit {1.5 * (k + 1):g})"]
    head.append("verdict")
    print("| " + " | ".join(head) + " |")
    print("|---|" + "---:|" * (len(head) - 2) + "---|")
    failed = False
    for w in workloads:
        quiet, qnote = results.get((w, 0), (None, "not run"))
        row = [LABELS[w].format(steps=args.train_steps), f"{quiet:.3f} s" if quiet is not None else f"— ({qnote})"]
        cells = []  # "ok", "fail" or "incomplete" per load
        for k in loaded:
            t, note = results.get((w, k), (None, "not run"))
            limit = 1.5 * (k + 1)
            if t is None or quiet is None:
                row += [f"— ({note})" if note else "—", "—"]
                # A run stopped at its cap took over twice its limit: that is a FAIL, not a gap.
                cells.append("fail" if quiet is not None and note and note.startswith("over") else "incomplete")
                continue
            slow = t / quiet
            row += [f"{t:.3f} s", f"{slow:.2f}x" + ("" if slow <= limit else " (over)") + (f" [{note}]" if note else "")]
            cells.append("fail" if slow > limit else "incomplete" if note else "ok")
        verdict = "FAIL" if "fail" in cells else "INCOMPLETE" if "incomplete" in cells or quiet is None else "PASS"
        if w == "torch":
            verdict += " (reference)"
        elif verdict != "PASS":
            failed = True
        row.append(verdict)
        print("| " + " | ".join(row) + " |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
