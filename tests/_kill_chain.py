"""The kill harness (run by tests/test_kill_chain.py; not a test module).

    python tests/_kill_chain.py BASE_DIR

One training run (train.py's main, the same arguments every time) is killed
with SIGKILL at each point of `POINTS` in turn, each time in a new process
that resumes where the last one's files left it, then finished by one more;
an uninterrupted run of the same arguments is the reference. Prints one JSON
line: each point and whether it killed, the finished run's exit status, the
largest weight difference to the reference, and the (tag, step) pairs
written more than once.

This process imports TensorFlow and starts none of it; each run is a child
forked from it (so a run costs no import), which arms one kill point: a
function of the package wrapped to SIGKILL the process at its n-th call.
"""

import collections
import glob
import json
import os
import signal
import sys

import siamese_research  # noqa: F401 (TensorFlow and the package, imported once)
from siamese_research import atomic
from siamese_research.summaries import views
from siamese_research.tools import train
from siamese_research.train.checkpoints import Checkpointer
from siamese_research.train.trainer import Trainer
from siamese_research.train.validation import Validator

# 96 pairs, 72 to train in batches of 8: 9 steps an epoch, 27 in 3 epochs;
# checkpoints every 3 steps and at epoch ends, view steps every 2.
ARGS = ["--num_samples=96", "--timesteps=5", "--features=6", "--units=4",
        "--encoder=conv1d", "--batch_size=8", "--epochs=3", "--prototypes=4",
        "--seed=3", "--steps_per_execution=2", "--log_every=2", "--histogram_every=6",
        "--checkpoint_every=3", "--projector_points=0", "--deterministic", "--verbose=0"]

# (what, n): die at the n-th time this process does it. In the order a run
# meets them, so that each process gets past what killed the one before.
POINTS = [
    ("replace", "config.json"), ("replace", "command.txt"),  # mid-write, at the start
    ("call", 1), ("view", 2), ("checkpoint_before", 1), ("checkpoint_after", 1),
    ("call", 2), ("view_before", 3), ("validation", 1),  # epoch 1's end ...
    ("replace", "best.keras"), ("replace", "best_encoder.keras"),
    ("replace", "best.json"), ("replace", "threshold.json"),  # ... before its checkpoint
    ("checkpoint_after", 2), ("call", 3), ("view", 2), ("checkpoint_before", 2),
    ("validation", 1), ("checkpoint_after", 3), ("call", 3), ("view_before", 2),
    ("replace", "model.keras"), ("replace", "encoder.keras"),  # the run's last files
]


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def arm(what, n):
    """Wraps the function `what` names to kill this process at its n-th call
    (for "replace", at the write of the file named `n`, before its rename)."""
    count = [0]

    def hit():
        count[0] += 1
        if count[0] == n:
            die()

    def after(cls, name):
        original = getattr(cls, name)

        def wrapped(*a, **k):
            out = original(*a, **k)
            hit()
            return out
        setattr(cls, name, wrapped)

    def before(cls, name):
        original = getattr(cls, name)

        def wrapped(*a, **k):
            hit()
            return original(*a, **k)
        setattr(cls, name, wrapped)

    if what == "replace":
        original = atomic.os.replace

        def replace(src, dst):
            if os.path.basename(dst) == n:
                die()
            return original(src, dst)
        atomic.os.replace = replace
    elif what == "call":
        after(Trainer, "_call")
    elif what == "view":
        after(views, "write_view")
    elif what == "view_before":
        before(views, "write_view")
    elif what == "checkpoint_before":
        before(Checkpointer, "save")
    elif what == "checkpoint_after":
        after(Checkpointer, "save")
    elif what == "validation":
        after(Validator, "evaluate")
    else:
        raise ValueError(what)


def run(run_dir, point=None) -> int:
    """train.py's main in a forked child, with `point` armed; returns its
    exit status, or -9 when it was killed."""
    pid = os.fork()
    if pid == 0:
        if point is not None:
            arm(*point)
        code = 1
        try:
            code = train.main(["train.py", *ARGS, f"--run_dir={run_dir}"])
        finally:
            os._exit(code if isinstance(code, int) else 1)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def tag_steps(folder):
    from tensorboard.backend.event_processing import event_file_loader

    seen = collections.Counter()
    for path in sorted(glob.glob(os.path.join(folder, "events.out.tfevents.*"))):
        for event in event_file_loader.EventFileLoader(path).Load():
            for value in event.summary.value:
                seen[(value.tag, event.step)] += 1
    return seen


def main(base):
    killed_dir, straight_dir = os.path.join(base, "killed"), os.path.join(base, "straight")
    points = [[what, n, run(killed_dir, (what, n))] for what, n in POINTS]
    finished = run(killed_dir)
    reference = run(straight_dir)
    # Forking is over: this process may start TensorFlow now.
    import keras
    import numpy as np

    def weights(folder):
        model = keras.saving.load_model(os.path.join(folder, "model.keras"))
        return [v.numpy() for v in model.trainable_variables]

    largest = max(float(np.max(np.abs(a - b))) for a, b in
                  zip(weights(killed_dir), weights(straight_dir)))
    twice, missing = {}, {}
    for sub in ("train", "validation"):
        seen = tag_steps(os.path.join(killed_dir, sub))
        want = tag_steps(os.path.join(straight_dir, sub))
        twice[sub] = sorted(f"{t}@{s}" for (t, s), c in seen.items() if c > 1)[:10]
        missing[sub] = sorted(f"{t}@{s}" for t, s in set(want) - set(seen))[:10]
    left = [p for p in glob.glob(os.path.join(killed_dir, "**", ".*"), recursive=True)
            if atomic.PARTIAL in p]
    print(json.dumps({"points": points, "finished": finished, "reference": reference,
                      "largest_difference": largest, "twice": twice,
                      "missing": missing, "partials": left}))


if __name__ == "__main__":
    main(sys.argv[1])
