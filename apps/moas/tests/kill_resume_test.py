#!/usr/bin/env python3
"""Kills `moas train` with SIGKILL again and again, most times at a chosen moment of a checkpoint's save (writing
the weights, the optimizer state, switching DIR/latest, linking, deleting the older pair), and resumes it each time.

After every kill the run directory must hold a complete checkpoint pair (weights and optimizer state at the same step,
named by DIR/latest, never older than the last one seen), metrics.jsonl must hold every step up to it, and nothing a
killed save left may pile up; the next `moas train --resume` must start from that pair. In the end the run, killed
and resumed many times, must have the very weights, optimizer state and log of a run that was never killed.

Usage: kill_resume_test.py MOAS_BINARY WORK_DIR [SEED]
SEED (or MOAS_KILL_TEST_SEED) repeats the kill moments of an earlier run; it is printed first.
"""
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_metadata  # noqa: E402

STEPS = 200
KILLS_IN_SAVES = 24  # kills aimed at a moment of a save (save_moments)
KILLS_ANYWHERE = 6   # kills at a random moment of a life: starting, resuming, training or saving
# A save every step, so that saves come often. One thread leaves a core to the polling here.
FLAGS = ["--layers", "1", "--heads", "4", "--width", "32", "--block", "32", "--batch", "4", "--steps", str(STEPS),
         "--dropout", "0.1", "--log-every", "1", "--eval-every", "7", "--eval-batches", "2", "--save-every", "1",
         "--threads", "1"]
# What a run directory may hold: a killed save or resumption leaves at most these temporary files besides them.
EXPECTED = {"latest", "checkpoints", "model.safetensors", "metrics.jsonl", "train.svg"}
TEMPORARY = {"latest.tmp", "model.safetensors.tmp", "metrics.jsonl.tmp", "train.svg.tmp"}


def fail(message):
    print("FAIL: " + message, file=sys.stderr)
    sys.exit(1)


def pair_name(step):
    return "step-%06d" % step


def latest_step(run):
    with open(os.path.join(run, "latest")) as latest:
        named = latest.read()
    match = re.fullmatch(r"checkpoints/step-(\d+)\n", named)
    if not match:
        fail("%s/latest holds %r" % (run, named))
    return int(match.group(1))


def train_steps(run):
    """The steps of metrics.jsonl's training entries; a last line a kill cut short is not one."""
    steps = []
    with open(os.path.join(run, "metrics.jsonl")) as log:
        for line in log:
            match = re.match(r'\{"step":(\d+),"lr".*\}\n$', line)
            if match:
                steps.append(int(match.group(1)))
    return steps


def check_after_kill(run, previous_step):
    """The state a kill left: returns the step of the complete pair that --resume will start from (0: none yet)."""
    if not os.path.exists(os.path.join(run, "latest")):
        if previous_step:
            fail("latest vanished after the checkpoint of step %d" % previous_step)
        return 0
    step = latest_step(run)
    if step < previous_step:
        fail("the checkpoint went back from step %d to step %d" % (previous_step, step))
    pair = os.path.join(run, "checkpoints", pair_name(step))
    model_step = safetensors_metadata.model_step(os.path.join(pair, "model.safetensors"))
    optimizer_step = safetensors_metadata.optimizer_step(os.path.join(pair, "model.optim.safetensors"))
    if model_step != step or optimizer_step != step:
        fail("latest names step %d, but its weights are at step %d and its optimizer at step %d"
             % (step, model_step, optimizer_step))
    # A kill between switching latest and linking model.safetensors leaves the weights of the save before.
    published = os.path.join(run, "model.safetensors")
    if os.path.exists(published):
        if safetensors_metadata.model_step(published) not in (step - 1, step):
            fail("model.safetensors is at step %d, latest at step %d" % (safetensors_metadata.model_step(published),
                                                                         step))
    elif previous_step:
        fail("model.safetensors vanished")
    missing = set(range(1, step + 1)) - set(train_steps(run))
    if missing:
        fail("metrics.jsonl lacks steps %s of the checkpoint's %d" % (sorted(missing), step))
    strays = set(os.listdir(run)) - EXPECTED - TEMPORARY
    pairs = os.listdir(os.path.join(run, "checkpoints"))
    if strays or len(pairs) > 2:  # the latest pair, and the one a killed save was writing
        fail("files pile up: %s beside %s" % (sorted(strays), sorted(pairs)))
    return step


def stat_or_none(path):
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


def appeared(path, before):
    """Whether path exists and is not what `before` (its stat when the life started, or None) described: a pair's
    directory that a killed save left is deleted when the next life starts, and made again when it saves that step."""
    now = stat_or_none(path)
    return now is not None and (before is None or (now.st_ino, now.st_ctime_ns) != (before.st_ino, before.st_ctime_ns))


def latest_or_zero(run):
    try:
        with open(os.path.join(run, "latest")) as latest:
            return int(latest.read().rsplit("-", 1)[1])
    except (FileNotFoundError, IndexError, ValueError):
        return 0


def same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except FileNotFoundError:
        return False


def save_moments(run, step):
    """The moments of the save of `step` in the order they come, each as a test that it has come or passed (so
    that polling cannot miss one that lasts less than a poll)."""
    pair = os.path.join(run, "checkpoints", pair_name(step))

    def switched(beyond=0):
        return latest_or_zero(run) >= step + beyond

    def written(*names):
        return lambda: switched() or any(os.path.exists(os.path.join(pair, name)) for name in names)

    return [
        ("begun", lambda: True),
        ("weights written", written("model.safetensors")),
        ("optimizer begun", written("model.optim.safetensors.tmp", "model.optim.safetensors")),
        ("pair written", written("model.optim.safetensors")),
        ("latest switched", switched),
        ("weights linked", lambda: switched(1) or same_file(os.path.join(run, "model.safetensors"),
                                                            os.path.join(pair, "model.safetensors"))),
        ("older pair deleted", lambda: switched(1) or (switched() and len(os.listdir(os.path.dirname(pair))) == 1)),
    ]


def wait_for(condition, child, what, seconds=60.0):
    """Polls until condition() holds (True), the child ends or `seconds` pass (False); a minute is an error."""
    start = time.monotonic()
    while not condition():
        if child.poll() is not None or time.monotonic() - start > seconds:
            return False
        if time.monotonic() - start > 60:
            fail("waited a minute for " + what)
        time.sleep(0.0005)
    return True


def finished(child, life, log):
    """Whether the child ended by itself; it may only end by finishing the run."""
    if child.poll() is None:
        return False
    with open(log) as out:
        output = out.read()
    if child.returncode != 0 or "done: steps" not in output:
        fail("life %d ended by itself with exit %d:\n%s" % (life, child.returncode, output))
    return True


def main():
    moas, work = os.path.abspath(sys.argv[1]), sys.argv[2]
    seed = int(sys.argv[3] if len(sys.argv) > 3 else
               os.environ.get("MOAS_KILL_TEST_SEED", random.SystemRandom().randrange(2 ** 32)))
    print("seed %d (repeat with: kill_resume_test.py MOAS WORK_DIR %d)" % (seed, seed), flush=True)
    rng = random.Random(seed)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    os.chdir(work)
    start = time.monotonic()
    run, log = "killed", "life.txt"

    kinds = ["save"] * KILLS_IN_SAVES + ["anywhere"] * KILLS_ANYWHERE
    rng.shuffle(kinds)
    step, kills, life = 0, 0, 0
    moments = {}  # kills aimed inside saves, by the moment of the save they were aimed at
    done = False
    while not done:
        life += 1
        resuming = os.path.exists(os.path.join(run, "latest"))
        command = [moas, "train", "--resume", "--out", run] if resuming else [moas, "train", *FLAGS, "--out", run]
        kind = kinds[kills] if kills < len(kinds) else "none"
        # Inside the save of the 1st to 3rd step this life trains (its pair's directory appears as the save starts);
        # or at a random moment, but no later than the 4th step's save, so that every kill finds the run unfinished.
        target_step = step + (rng.randint(1, 3) if kind == "save" else 4)
        target = os.path.join(run, "checkpoints", pair_name(target_step))
        before = stat_or_none(target)
        with open(log, "w") as out:
            child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        if kind == "save":
            moment, has_come = rng.choice(save_moments(run, target_step))
            if wait_for(lambda: appeared(target, before) and has_come(), child, target):
                time.sleep(rng.uniform(0, 0.002))
                moments[moment] = moments.get(moment, 0) + 1
        elif kind == "anywhere":
            wait_for(lambda: appeared(target, before), child, target, seconds=rng.uniform(0, 0.4))
        else:
            child.wait(timeout=120)
        done = finished(child, life, log)
        if not done:
            child.send_signal(signal.SIGKILL)
            child.wait()
            kills += 1
        with open(log) as out:
            output = out.read()
        if resuming and "resuming" in output and "at step %d\n" % step not in output:
            fail("life %d did not resume from step %d:\n%s" % (life, step, output))
        step = check_after_kill(run, step)

    if step != STEPS:
        fail("the run ended at step %d, not %d" % (step, STEPS))
    if os.listdir(os.path.join(run, "checkpoints")) != [pair_name(STEPS)] or set(os.listdir(run)) != EXPECTED:
        fail("the finished run was not tidied: %s" % sorted(os.listdir(run)))
    if train_steps(run) != list(range(1, STEPS + 1)):
        fail("metrics.jsonl does not hold steps 1-%d once each, in order" % STEPS)
    killed_seconds = time.monotonic() - start

    subprocess.run([moas, "train", *FLAGS, "--out", "straight"], check=True, stdout=subprocess.DEVNULL)
    for name in ("model.safetensors", "model.optim.safetensors"):
        paths = [os.path.join(r, "checkpoints", pair_name(STEPS), name) for r in (run, "straight")]
        with open(paths[0], "rb") as a, open(paths[1], "rb") as b:
            if a.read() != b.read():
                fail("%s differs from the run that was never killed" % paths[0])
    logs = []
    for r in (run, "straight"):
        with open(os.path.join(r, "metrics.jsonl")) as metrics:
            logs.append([re.sub(r',"tokens_per_s":.*}$', "}", line) for line in metrics])
    if logs[0] != logs[1]:
        fail("metrics.jsonl differs from the run that was never killed")
    print("%d kills over %d lives in %.1f s; aimed inside saves: %s" % (kills, life, killed_seconds, ", ".join(
        "%d after %s" % (n, moment) for moment, n in sorted(moments.items()))))
    print("the run killed and resumed equals the run never killed")
    print("PASS: kill_resume")


if __name__ == "__main__":
    main()
