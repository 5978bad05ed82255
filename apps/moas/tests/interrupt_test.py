#!/usr/bin/env python3
"""SIGINT and SIGTERM during `moas train`: the run saves a checkpoint at the next step boundary, exits with 128 + the
signal's number, and prints a command that continues it to the very weights and log of a run never interrupted.

Usage: interrupt_test.py MOAS_BINARY WORK_DIR
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_metadata  # noqa: E402

# --save-every 0: the only checkpoint before the end is the one the signal asks for.
FLAGS = ["--layers", "1", "--heads", "4", "--width", "32", "--block", "32", "--batch", "4", "--steps", "3000",
         "--stop-at", "2000", "--dropout", "0.1", "--log-every", "1", "--eval-every", "500", "--eval-batches", "2",
         "--save-every", "0", "--threads", "1"]


def fail(message):
    print("FAIL: " + message, file=sys.stderr)
    sys.exit(1)


def train_steps(run):
    steps = []
    with open(os.path.join(run, "metrics.jsonl")) as log:
        for line in log:
            match = re.match(r'\{"step":(\d+),"lr"', line)
            if match:
                steps.append(int(match.group(1)))
    return steps


def without_timing(run):
    with open(os.path.join(run, "metrics.jsonl")) as log:
        return [re.sub(r',"tokens_per_s":.*}$', "}", line) for line in log]


def pair_files(run, step):
    pair = os.path.join(run, "checkpoints", "step-%06d" % step)
    return os.path.join(pair, "model.safetensors"), os.path.join(pair, "model.optim.safetensors")


def interrupt_and_continue(moas, run, signum, straight):
    name = signal.Signals(signum).name
    child = subprocess.Popen([moas, "train", *FLAGS, "--out", run], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (os.path.exists(os.path.join(run, "metrics.jsonl")) and len(train_steps(run)) >= 5):
        if child.poll() is not None or time.monotonic() > deadline:
            fail("%s: the run ended or stalled before step 5: %s" % (name, child.communicate()[1]))
        time.sleep(0.005)
    if signum == signal.SIGTERM:
        # One training at a time per directory: a second one is refused before it writes anything.
        second = subprocess.run([moas, "train", *FLAGS, "--overwrite", "--out", run], capture_output=True, text=True)
        if second.returncode != 1 or "another moas is training in %s" % run not in second.stderr:
            fail("a second run in %s was not refused: exit %d: %s" % (run, second.returncode, second.stderr))
    child.send_signal(signum)
    _, stderr = child.communicate(timeout=60)
    if child.returncode != 128 + signum:
        fail("%s: exit %d, expected %d: %s" % (name, child.returncode, 128 + signum, stderr))
    match = re.search(r"^moas: interrupted by %s: saved the checkpoint of step (\d+) in %s; continue with: (.*)$"
                      % (name, re.escape(run)), stderr, re.M)
    if not match:
        fail("%s: no resume command in: %s" % (name, stderr))
    step, command = int(match.group(1)), match.group(2)
    with open(os.path.join(run, "latest")) as latest:
        named = latest.read().strip()
    model, optimizer = pair_files(run, step)
    if named != "checkpoints/step-%06d" % step:
        fail("%s: %s/latest names %s, not step %d" % (name, run, named, step))
    if not 5 <= step < 2000 or safetensors_metadata.model_step(model) != step or \
            safetensors_metadata.optimizer_step(optimizer) != step:
        fail("%s: the checkpoint of step %d is not a pair at that step boundary" % (name, step))
    if train_steps(run) != list(range(1, step + 1)):
        fail("%s: metrics.jsonl does not hold steps 1-%d exactly" % (name, step))

    resumed = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=120)
    if resumed.returncode != 0 or "at step %d\n" % step not in resumed.stdout or \
            "done: steps %d-2000 " % (step + 1) not in resumed.stdout:
        fail("%s: `%s` did not continue from step %d: exit %d\n%s%s"
             % (name, command, step, resumed.returncode, resumed.stdout, resumed.stderr))
    for mine, theirs in zip(pair_files(run, 2000), pair_files(straight, 2000)):
        with open(mine, "rb") as a, open(theirs, "rb") as b:
            if a.read() != b.read():
                fail("%s: %s differs from the uninterrupted run's" % (name, mine))
    if without_timing(run) != without_timing(straight):
        fail("%s: metrics.jsonl differs from the uninterrupted run's" % name)
    print("%s at step %d: exit %d; `%s` continued it to the uninterrupted run's weights" %
          (name, step, 128 + signum, command))


def main():
    moas, work = os.path.abspath(sys.argv[1]), sys.argv[2]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    os.chdir(work)
    subprocess.run([moas, "train", *FLAGS, "--out", "straight"], check=True, stdout=subprocess.DEVNULL)
    for signum in (signal.SIGINT, signal.SIGTERM):
        interrupt_and_continue(moas, signal.Signals(signum).name.lower(), signum, "straight")
    print("PASS: interrupt")


if __name__ == "__main__":
    main()
